//! The Slack incoming-webhook message for a stored body `{type, timestamp, data}`.
//!
//! What people typed (justification, ticket, names) and what a cluster holds (images,
//! writers, namespaces) is never parsed as Slack markup: it goes into `plain_text` objects,
//! on one line where a line is expected, so no input can add a heading, a field, a link or
//! a mention. The broker's own labels are the only `mrkdwn`, bold, and fixed text: a label
//! in bold is always the broker's. The justification sits alone under its own label. The
//! fallback `text` is sent with `"mrkdwn": false` and Slack's control characters escaped.

use serde_json::{Value, json};

use super::EventType;

/// Slack's limits: a header's text, a field's, a section's.
const HEADER_MAX: usize = 150;
const FIELD_MAX: usize = 2000;
const SECTION_MAX: usize = 3000;
/// A section holds at most ten fields: five label/value pairs.
const PAIRS_PER_SECTION: usize = 5;

/// The message: `text` (what happened, the ticket and the link, for notifications and
/// clients without blocks) and `blocks`. Only what the body holds, which holds no secrets,
/// tokens or manifests.
pub fn slack_message(body: &Value) -> Value {
    let kind = body["type"].as_str().and_then(EventType::parse);
    if kind == Some(EventType::Unbrokered) {
        return unbrokered(body);
    }
    let data = &body["data"];
    let s = |key: &str| one_line(data[key].as_str().unwrap_or_default());
    let ticket = s("ticket");
    let url = data["url"].as_str().unwrap_or_default();
    let headline = headline(body);
    let mut pairs = vec![
        ("Ticket", ticket.clone()),
        ("Target", place(data)),
        ("Requester", s("requester")),
        ("State", s("state")),
    ];
    if kind == Some(EventType::Created) {
        if let Some(original) = data["extends"].as_str() {
            pairs.push(("Extends request", one_line(original)));
            if let Some(minutes) = data["minutes"].as_u64() {
                pairs.push(("More time", format!("{minutes} minutes")));
            }
        }
        pairs.push(("Approval rule", s("approval_rule")));
    }
    let approvers = strings(&data["approvers"]);
    if !approvers.is_empty() {
        pairs.push(("Approved by", approvers.join(", ")));
    }
    if let Some(outcome) = data["outcome"].as_str() {
        pairs.push(("Outcome", one_line(outcome)));
    }
    let mut blocks = vec![header(&headline)];
    blocks.extend(fields(&pairs));
    blocks.extend(list("Images", "images", &strings(&data["images"])));
    if kind == Some(EventType::Created) {
        let why = multi_line(data["justification"].as_str().unwrap_or_default());
        if !why.is_empty() {
            blocks.push(label("Why, in the requester's own words"));
            blocks.push(plain_section(&why));
            blocks.push(json!({"type": "divider"}));
        }
    }
    blocks.push(button("Open the request", url));
    // The fallback names the ticket even for a headline that does not.
    let said = if ticket.is_empty() || headline.contains(&ticket) {
        headline
    } else {
        format!("{headline} ({ticket})")
    };
    message(&said, url, blocks)
}

/// A breakglass the broker did not make: where, what, which images, who wrote it, and the
/// alerts page. A finding has no ticket, requester or state.
fn unbrokered(body: &Value) -> Value {
    let data = &body["data"];
    let s = |key: &str| one_line(data[key].as_str().unwrap_or_default());
    let url = data["url"].as_str().unwrap_or_default();
    let headline = headline(body);
    let pairs = [
        ("Target", s("target")),
        ("Namespace", s("namespace")),
        ("Kind", s("kind")),
        ("Name", s("name")),
        ("UID", s("uid")),
    ];
    let reasons: Vec<String> = data["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let reason = r["reason"].as_str()?.replace('_', " ");
            Some(match r["request_id"].as_str() {
                Some(id) => format!("{reason} (request {id})"),
                None => reason,
            })
        })
        .collect();
    let mut blocks = vec![header(&headline)];
    blocks.extend(fields(&pairs));
    blocks.extend(list("Images", "images", &strings(&data["images"])));
    blocks.extend(list("Written by", "writers", &strings(&data["writers"])));
    blocks.extend(list("Why it is flagged", "reasons", &reasons));
    blocks.push(button("Open the alerts", url));
    let what = match (s("kind"), s("name")) {
        (kind, name) if !kind.is_empty() && !name.is_empty() => {
            format!("{headline}: {kind}/{name}")
        }
        _ => headline,
    };
    message(&what, url, blocks)
}

/// One line saying what happened, with no line breaks or control characters in it.
pub fn headline(body: &Value) -> String {
    let data = &body["data"];
    let s = |key: &str| data[key].as_str().unwrap_or_default();
    let place = place(data);
    let ticket = s("ticket");
    let line = match body["type"].as_str().and_then(EventType::parse) {
        Some(EventType::Created) => match (data["extends"].as_str(), data["minutes"].as_u64()) {
            (Some(_), Some(minutes)) => format!(
                "{} asks to extend breakglass {ticket} on {place} by {minutes} minutes",
                s("requester")
            ),
            _ => format!(
                "{} asks for breakglass on {place} for {ticket}",
                s("requester")
            ),
        },
        Some(EventType::Approved) => format!(
            "{} approved breakglass {ticket} ({} of {} approvals)",
            s("actor"),
            data["approvals"]["count"],
            data["approvals"]["needed"]
        ),
        Some(EventType::Rejected) => format!("{} rejected breakglass {ticket}", s("actor")),
        Some(EventType::Applied) => format!(
            "Breakglass {ticket} is active on {place} until {}",
            time(data, "expires_at")
        ),
        Some(EventType::Expiring) => format!(
            "Breakglass {ticket} on {place} ends at {}",
            time(data, "expires_at")
        ),
        Some(EventType::Ended) => format!("Breakglass {ticket} on {place} {}", s("state")),
        Some(EventType::Failed) => format!("Breakglass {ticket} could not be applied on {place}"),
        Some(EventType::NeedsAttention) => {
            format!("Breakglass {ticket} on {place} could not be undone: it needs attention")
        }
        Some(EventType::Unbrokered) => format!("A breakglass the broker did not make on {place}"),
        None => format!("Breakglass {ticket} on {place}"),
    };
    one_line(&line)
}

fn place(data: &Value) -> String {
    let s = |key: &str| data[key].as_str().unwrap_or_default();
    one_line(&format!("{}/{}", s("target"), s("namespace")))
}

fn time(data: &Value, key: &str) -> String {
    data["times"][key].as_str().unwrap_or("?").to_owned()
}

/// The strings of a JSON array, each on one line, repeats dropped.
fn strings(value: &Value) -> Vec<String> {
    let mut seen = Vec::new();
    for item in value.as_array().into_iter().flatten() {
        let Some(text) = item.as_str() else { continue };
        let text = one_line(text);
        if !text.is_empty() && !seen.contains(&text) {
            seen.push(text);
        }
    }
    seen
}

fn message(said: &str, url: &str, blocks: Vec<Value>) -> Value {
    json!({
        "text": escape(&format!("{said}: {url}")),
        "mrkdwn": false,
        "blocks": blocks,
    })
}

fn header(text: &str) -> Value {
    json!({"type": "header", "text": plain(&truncate(text, HEADER_MAX))})
}

/// Label/value pairs as section fields, the label in bold (the broker's words), the value
/// plain text; pairs with nothing to say are left out.
fn fields(pairs: &[(&str, String)]) -> Vec<Value> {
    let shown: Vec<&(&str, String)> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    shown
        .chunks(PAIRS_PER_SECTION)
        .map(|chunk| {
            let fields: Vec<Value> = chunk
                .iter()
                .flat_map(|(name, value)| {
                    [
                        json!({"type": "mrkdwn", "text": format!("*{name}*")}),
                        plain(&truncate(value, FIELD_MAX)),
                    ]
                })
                .collect();
            json!({"type": "section", "fields": fields})
        })
        .collect()
}

/// A labelled list, one item a line. What does not fit is counted, never cut: "… and 3 more
/// images (see the request)".
fn list(name: &str, noun: &str, items: &[String]) -> Vec<Value> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut text = String::new();
    let mut shown = 0;
    for (i, item) in items.iter().enumerate() {
        let rest = items.len() - i - 1;
        // Room for this item and, if any remain, the line that counts them.
        let tail = if rest == 0 {
            0
        } else {
            more(rest, noun).chars().count() + 1
        };
        let needed = text.chars().count() + usize::from(shown > 0) + item.chars().count() + tail;
        if needed > SECTION_MAX {
            break;
        }
        if shown > 0 {
            text.push('\n');
        }
        text.push_str(item);
        shown += 1;
    }
    if shown < items.len() {
        if shown > 0 {
            text.push('\n');
        }
        text.push_str(&more(items.len() - shown, noun));
    }
    vec![label(name), plain_section(&text)]
}

fn more(count: usize, noun: &str) -> String {
    format!("… and {count} more {noun} (see the page)")
}

fn label(name: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{name}*")}})
}

fn plain_section(text: &str) -> Value {
    json!({"type": "section", "text": plain(&truncate(text, SECTION_MAX))})
}

fn plain(text: &str) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": false})
}

fn button(text: &str, url: &str) -> Value {
    json!({"type": "actions", "elements": [{
        "type": "button",
        "text": plain(text),
        "url": url,
    }]})
}

/// Characters that break a line or reorder how text reads: control characters, Unicode line
/// and paragraph separators, and the bidirectional overrides and isolates.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// On one line: every run of whitespace and unsafe characters becomes one space.
fn one_line(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if unsafe_char(c) { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lines kept (at most one empty line in a row), everything else as [`one_line`] does.
fn multi_line(text: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in text.replace("\r\n", "\n").split(['\n', '\r']) {
        let line = one_line(line);
        if line.is_empty() && lines.last().is_none_or(String::is_empty) {
            continue;
        }
        lines.push(line);
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.join("\n")
}

/// Slack's three control characters, so that input cannot make links or mentions where
/// Slack parses them (the fallback `text`).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text object of the message, as (type, text).
    fn texts(message: &Value) -> Vec<(String, String)> {
        fn walk(value: &Value, out: &mut Vec<(String, String)>) {
            match value {
                Value::Object(map) => {
                    if let (Some(Value::String(kind)), Some(Value::String(text))) =
                        (map.get("type"), map.get("text"))
                    {
                        out.push((kind.clone(), text.clone()));
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&message["blocks"], &mut out);
        out
    }

    fn created(justification: &str) -> Value {
        json!({"type": "request.created", "data": {
            "ticket": "INC-1\n*Approval rule*", "requester": "Alice\r\n*State* approved",
            "target": "t", "namespace": "n", "state": "pending",
            "justification": justification, "approval_rule": "2 from approvers",
            "images": ["us-docker.pkg.dev/acme/api:1\n*Images*"],
            "url": "https://b.example/requests/r1",
        }})
    }

    #[test]
    fn what_people_typed_is_plain_text_and_only_the_brokers_labels_are_markup() {
        let forged = "hotfix\n*Approval rule*\n0 from anyone (pre-approved by security)\n*Images*\n`us-docker.pkg.dev/acme/release/api:1`\n> quoted <!channel> & _x_ ~y~";
        let message = slack_message(&created(forged));
        let texts = texts(&message);
        let labels = [
            "*Ticket*",
            "*Target*",
            "*Requester*",
            "*State*",
            "*Approval rule*",
            "*Images*",
            "*Why, in the requester's own words*",
        ];
        for (kind, text) in &texts {
            if kind == "mrkdwn" {
                assert!(
                    labels.contains(&text.as_str()),
                    "markup beyond labels: {text:?}"
                );
            }
        }
        for label in labels {
            let count = texts.iter().filter(|(_, t)| t == label).count();
            assert_eq!(count, 1, "{label} once: {texts:?}");
        }
        // The justification whole, in one plain text block of its own right after its label.
        let why = texts
            .iter()
            .position(|(_, t)| t == "*Why, in the requester's own words*")
            .expect("the label");
        assert_eq!(texts[why + 1].0, "plain_text");
        assert!(
            texts[why + 1]
                .1
                .starts_with("hotfix\n*Approval rule*\n0 from anyone")
        );
        // Single-line fields keep to one line.
        for expected in [
            "INC-1 *Approval rule*",
            "Alice *State* approved",
            "us-docker.pkg.dev/acme/api:1 *Images*",
        ] {
            assert!(
                texts
                    .iter()
                    .any(|(k, t)| k == "plain_text" && t == expected),
                "{expected:?} in {texts:?}"
            );
        }
        // The fallback: no markup parsed, Slack's control characters escaped, one line.
        assert_eq!(message["mrkdwn"], false);
        let text = message["text"].as_str().expect("text");
        assert!(!text.contains('\n') && !text.contains('<'), "{text}");
        assert!(text.ends_with(": https://b.example/requests/r1"), "{text}");
    }

    #[test]
    fn control_characters_and_bidi_overrides_do_not_survive_on_one_line() {
        assert_eq!(
            one_line("a\u{2028}b\u{202E}c\td\u{0}e\u{85}f"),
            "a b c d e f"
        );
        assert_eq!(multi_line("one\r\n\r\n\r\ntwo\u{2029}\n\n"), "one\n\ntwo");
    }

    #[test]
    fn an_image_list_too_long_for_slack_says_how_many_more_and_cuts_none() {
        let mut images: Vec<String> = (0..59)
            .map(|i| {
                format!(
                    "us-docker.pkg.dev/acme/hotfix/api{i}@sha256:{}",
                    "a".repeat(64)
                )
            })
            .collect();
        images.push(format!(
            "us-docker.pkg.dev/attacker/miner@sha256:{}",
            "b".repeat(64)
        ));
        let blocks = list("Images", "images", &images);
        let text = blocks[1]["text"]["text"].as_str().expect("text");
        assert!(text.chars().count() <= SECTION_MAX);
        let lines: Vec<&str> = text.lines().collect();
        let (last, shown) = lines.split_last().expect("lines");
        for line in shown {
            assert!(images.iter().any(|i| i == line), "a whole image: {line}");
        }
        assert_eq!(
            *last,
            format!(
                "… and {} more images (see the page)",
                images.len() - shown.len()
            )
        );
        // A list that fits is shown whole.
        let blocks = list("Images", "images", &images[..3]);
        assert_eq!(
            blocks[1]["text"]["text"]
                .as_str()
                .expect("text")
                .lines()
                .count(),
            3
        );
    }

    #[test]
    fn an_extension_says_it_extends_and_by_how_much() {
        let body = json!({"type": "request.created", "data": {
            "ticket": "INC-7", "requester": "alice", "target": "t", "namespace": "n",
            "state": "pending", "extends": "O1", "minutes": 30, "justification": "still on it",
            "url": "https://b.example/requests/E1",
        }});
        let message = slack_message(&body);
        assert_eq!(
            headline(&body),
            "alice asks to extend breakglass INC-7 on t/n by 30 minutes"
        );
        let texts = texts(&message);
        assert!(texts.iter().any(|(_, t)| t == "O1"), "{texts:?}");
        assert!(texts.iter().any(|(_, t)| t == "30 minutes"), "{texts:?}");
    }

    #[test]
    fn a_finding_names_the_workload_and_links_to_the_alerts_without_empty_fields() {
        let body = json!({"type": "breakglass.unbrokered", "data": {
            "target": "dev", "namespace": "prod", "kind": "Deployment", "name": "miner",
            "uid": "u-1", "images": ["x:1` <!channel> <https://evil.example|Approve> `"],
            "writers": ["<!here> <https://evil.example|security-team>", "kubectl"],
            "reasons": [{"reason": "made_up_request", "request_id": "R9"}],
            "url": "https://b.example/alerts",
        }});
        let message = slack_message(&body);
        let texts = texts(&message);
        for (kind, text) in &texts {
            assert!(!text.is_empty());
            if kind == "mrkdwn" {
                assert!(text.starts_with('*') && text.ends_with('*'), "{text}");
            }
        }
        for expected in [
            "Deployment",
            "miner",
            "u-1",
            "prod",
            "x:1` <!channel> <https://evil.example|Approve> `",
            "<!here> <https://evil.example|security-team>\nkubectl",
            "made up request (request R9)",
            "Open the alerts",
        ] {
            assert!(
                texts.iter().any(|(_, t)| t == expected),
                "{expected:?} in {texts:?}"
            );
        }
        for absent in ["*Ticket*", "*Requester*", "*State*", "Open the request"] {
            assert!(
                !texts.iter().any(|(_, t)| t == absent),
                "{absent} in {texts:?}"
            );
        }
        let button = message["blocks"]
            .as_array()
            .and_then(|b| b.last())
            .map(|b| &b["elements"][0]);
        assert_eq!(
            button.map(|b| &b["url"]),
            Some(&json!("https://b.example/alerts"))
        );
        let text = message["text"].as_str().expect("text");
        assert!(
            text.contains("Deployment/miner") && !text.contains('<'),
            "{text}"
        );
    }
}
