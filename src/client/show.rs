//! How the command line shows requests to people: a summary of what will run, one line of
//! progress, a table. Scripts use `--output json` instead, which prints the API's own JSON.

use serde_json::Value;

fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Every container image in the request's objects, as `container: image`.
pub fn images(objects: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(objects, &mut found);
    found
}

fn walk(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(image) = map.get("image").and_then(Value::as_str) {
                match map.get("name").and_then(Value::as_str) {
                    Some(name) => found.push(format!("{name}: {image}")),
                    None => found.push(image.to_owned()),
                }
            }
            map.values().for_each(|v| walk(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
        _ => {}
    }
}

/// The objects as `Kind/name`.
fn objects(objects: &Value) -> Vec<String> {
    objects
        .as_array()
        .map(|list| {
            list.iter()
                .map(|o| {
                    format!(
                        "{}/{}",
                        text(o, "kind"),
                        o.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The approval rule and how far it has come: `2 from approvers (so far: bob)`.
pub fn rule(request: &Value) -> String {
    let Some(rules) = request.pointer("/approval/rules").and_then(Value::as_array) else {
        return String::new();
    };
    rules
        .iter()
        .map(|r| {
            let counted: Vec<&str> = r
                .get("counted")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut s = format!(
                "{} from {}",
                r.get("required").and_then(Value::as_u64).unwrap_or(0),
                text(r, "group")
            );
            if !counted.is_empty() {
                s.push_str(&format!(" (so far: {})", counted.join(", ")));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// What a request is and will do, for a person deciding on it or following it.
pub fn summary(request: &Value) -> String {
    let mut lines = vec![format!(
        "Request {}  [{}]",
        text(request, "id"),
        text(request, "state")
    )];
    let mut row = |key: &str, value: String| {
        if !value.is_empty() {
            lines.push(format!("  {key:<11}{value}"));
        }
    };
    let namespace = text(request, "namespace");
    row(
        "target",
        if namespace.is_empty() {
            text(request, "target").to_owned()
        } else {
            format!("{} / {namespace}", text(request, "target"))
        },
    );
    row("ticket", text(request, "ticket").to_owned());
    row("requester", text(request, "requester").to_owned());
    row("why", super::api::one_line(text(request, "justification")));
    if let Some(minutes) = request.get("duration_minutes").and_then(Value::as_i64) {
        row("duration", format!("{minutes} min"));
    }
    let empty = Value::Null;
    let objs = request.get("objects").unwrap_or(&empty);
    row("objects", objects(objs).join(", "));
    for (i, image) in images(objs).into_iter().enumerate() {
        row(if i == 0 { "images" } else { "" }, image);
    }
    row("digest", text(request, "digest").to_owned());
    row("approval", rule(request));
    row("extends", text(request, "extends").to_owned());
    if text(request, "state") == "pending" {
        row("decide by", text(request, "decide_by").to_owned());
    }
    row("expires at", text(request, "expires_at").to_owned());
    row("error", text(request, "last_error").to_owned());
    lines.join("\n")
}

/// One line on where the request stands.
pub fn progress(request: &Value) -> String {
    let state = text(request, "state");
    match state {
        "pending" => match rule(request) {
            r if r.is_empty() => "pending: waiting for approval".to_owned(),
            r => format!("pending: waiting for approval: {r}"),
        },
        "approved" => "approved: the broker is applying it".to_owned(),
        "active" => format!("active: live until {}", text(request, "expires_at")),
        "needs_attention" => format!(
            "needs attention: the end did not finish: {}",
            text(request, "last_error")
        ),
        "failed" => format!("failed: {}", text(request, "last_error")),
        other => other.to_owned(),
    }
}

/// Where `--wait` stops, and whether that is a success.
pub fn settled(state: &str) -> Option<bool> {
    match state {
        "active" | "expired" | "closed" | "granted" => Some(true),
        "rejected" | "cancelled" | "lapsed" | "failed" | "needs_attention" => Some(false),
        _ => None,
    }
}

/// Requests as a table, newest first as the broker lists them.
pub fn table(requests: &[Value]) -> String {
    if requests.is_empty() {
        return "no requests".to_owned();
    }
    let rows: Vec<[String; 6]> = requests
        .iter()
        .map(|r| {
            let namespace = text(r, "namespace");
            [
                text(r, "id").to_owned(),
                text(r, "state").to_owned(),
                if namespace.is_empty() {
                    text(r, "target").to_owned()
                } else {
                    format!("{}/{namespace}", text(r, "target"))
                },
                text(r, "ticket").to_owned(),
                text(r, "requester").to_owned(),
                text(r, "created_at").to_owned(),
            ]
        })
        .collect();
    let header = ["ID", "STATE", "TARGET", "TICKET", "REQUESTER", "CREATED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Value {
        json!({
            "id": "r1", "state": "pending", "target": "prod", "namespace": "payments",
            "ticket": "INC-1", "requester": "alice", "justification": "hotfix\nfor the outage",
            "duration_minutes": 30, "digest": "sha256:abc", "decide_by": "2026-11-23T14:30:00Z",
            "objects": [{"kind": "Deployment", "metadata": {"name": "api"},
                "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "reg/api@sha256:1"}]}}}}],
            "approval": {"satisfied": false, "rules": [
                {"group": "sre", "required": 1, "counted": ["bob"]},
                {"group": "security", "required": 1, "counted": []}]}
        })
    }

    #[test]
    fn the_summary_shows_images_digest_rule_and_justification() {
        let text = summary(&request());
        for part in [
            "prod / payments",
            "Deployment/api",
            "api: reg/api@sha256:1",
            "sha256:abc",
            "1 from sre (so far: bob) and 1 from security",
            "hotfix for the outage",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    #[test]
    fn waiting_stops_at_active_or_an_end_and_says_which_failed() {
        assert_eq!(settled("pending"), None);
        assert_eq!(settled("approved"), None);
        assert_eq!(settled("active"), Some(true));
        assert_eq!(settled("rejected"), Some(false));
        assert_eq!(settled("failed"), Some(false));
    }

    #[test]
    fn the_table_lines_up_its_columns() {
        let table = table(&[request()]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("STATE"), lines[1].find("pending"));
    }
}
