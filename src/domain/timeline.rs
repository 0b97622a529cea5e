//! A timeline people read: one sentence for each audit event about a request, built from what
//! the event recorded (its action, who acted, its detail) and nothing else, so the request
//! page, the ticket page and the audit page word one event the same way.

use serde_json::Value;

use super::AuditAction;

/// The sentence for one audit event: `bob approved (1 of 2): matches the incident`.
///
/// `actor` is the actor's name as the page shows it (told apart from others who share it).
/// An action this build does not know (written by a newer one) reads as its stored name.
pub fn sentence(action: &str, actor: &str, detail: &Value) -> String {
    let text = |key: &str| {
        detail
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let because = |sentence: String, key: &str| match text(key) {
        Some(why) => format!("{sentence}: {why}"),
        None => sentence,
    };
    let Some(known) = AuditAction::parse(action) else {
        return format!("{actor}: {action}");
    };
    match known {
        AuditAction::Created => {
            let mut s = format!("{actor} asked for breakglass");
            if let Some(minutes) = detail.get("duration_minutes").and_then(Value::as_u64) {
                s.push_str(&format!(" for {}", minutes_text(minutes)));
            }
            if let Some(objects) = list(detail.get("objects")) {
                s.push_str(&format!(" on {objects}"));
            }
            if let Some(original) = text("extends") {
                s.push_str(&format!(", to extend request {original}"));
            }
            because(s, "justification")
        }
        AuditAction::Approved => {
            let counted = detail.get("counted").and_then(Value::as_u64);
            let required = detail.get("required").and_then(Value::as_u64);
            let s = match (counted, required) {
                (Some(n), Some(of)) => format!("{actor} approved ({n} of {of})"),
                _ => format!("{actor} approved"),
            };
            because(s, "comment")
        }
        AuditAction::Rejected => because(format!("{actor} rejected it"), "comment"),
        AuditAction::FullyApproved => match text("rule") {
            Some(rule) => format!("Fully approved ({rule})"),
            None => "Fully approved".to_owned(),
        },
        AuditAction::Cancelled => format!("{actor} cancelled it"),
        AuditAction::CloseRequested => because(format!("{actor} asked to end it now"), "comment"),
        AuditAction::Lapsed => {
            "Nobody decided before the approval window closed; nothing was applied".to_owned()
        }
        AuditAction::Applying => match list_of_objects(detail.get("objects")) {
            Some(objects) => format!("The broker started applying {objects}"),
            None => "The broker started applying".to_owned(),
        },
        AuditAction::Applied => {
            let mut s = "Applied with breakglass".to_owned();
            if let Some(until) = text("expires_at") {
                s.push_str(&format!(" until {}", short_time(until)));
            }
            s
        }
        AuditAction::Failed => because("The apply failed".to_owned(), "error"),
        AuditAction::NeedsAttention => because(
            "The end did not finish; it needs attention".to_owned(),
            "error",
        ),
        AuditAction::Closed => ended("Ended early", detail),
        AuditAction::Expired => ended("Time was up", detail),
        AuditAction::ExtensionRequested => {
            let mut s = format!("{actor} asked to extend it");
            if let Some(minutes) = detail.get("minutes").and_then(Value::as_u64) {
                s.push_str(&format!(" by {}", minutes_text(minutes)));
            }
            if let Some(extension) = text("extension") {
                s.push_str(&format!(" (request {extension})"));
            }
            because(s, "justification")
        }
        AuditAction::Extended => {
            let mut s = "Extended".to_owned();
            if let Some(until) = text("expires_at") {
                s.push_str(&format!(" until {}", short_time(until)));
            }
            if let Some(extension) = text("extension") {
                s.push_str(&format!(" by request {extension}"));
            }
            s.push_str("; nothing was undone in between");
            s
        }
        AuditAction::Reviewed => because(format!("{actor} wrote the review"), "review"),
        AuditAction::Unbrokered => {
            let what = match (text("kind"), text("name")) {
                (Some(kind), Some(name)) => format!("{kind}/{name}"),
                _ => "a workload".to_owned(),
            };
            format!("Breakglass the broker did not make: {what}")
        }
        AuditAction::UnbrokeredRemoved => {
            "The broker removed a breakglass it did not make".to_owned()
        }
        AuditAction::AlertAcknowledged => {
            because(format!("{actor} acknowledged the alert"), "comment")
        }
        AuditAction::NotificationGaveUp => because(
            "A notification could not be delivered and was given up".to_owned(),
            "error",
        ),
        AuditAction::NotificationDisabled => {
            let endpoint = text("endpoint").unwrap_or("a notification endpoint");
            let status = match detail.get("status").and_then(Value::as_u64) {
                Some(status) => format!("HTTP {status}"),
                None => "410 Gone".to_owned(),
            };
            format!(
                "Notification endpoint {endpoint} answered {status}; it is disabled until its configuration changes"
            )
        }
        AuditAction::ExtensionGranted => {
            let mut s = "Granted".to_owned();
            if let Some(original) = text("extends") {
                s.push_str(&format!(": request {original} now runs"));
                if let Some(until) = text("expires_at") {
                    s.push_str(&format!(" until {}", short_time(until)));
                }
            }
            s
        }
    }
}

/// The end of a breakglass, with what the broker did to each object.
fn ended(what: &str, detail: &Value) -> String {
    let did: Vec<String> = detail
        .get("objects")
        .and_then(Value::as_array)
        .map(|objects| {
            objects
                .iter()
                .filter_map(|o| {
                    let object = o.get("object")?.as_str()?;
                    let did = o.get("did")?.as_str()?;
                    Some(format!("{object} {did}"))
                })
                .collect()
        })
        .unwrap_or_default();
    if did.is_empty() {
        format!("{what}; the broker undid the breakglass")
    } else {
        format!(
            "{what}; the broker undid the breakglass ({})",
            did.join(", ")
        )
    }
}

/// A list of strings, joined, if the value is one and not empty.
fn list(value: Option<&Value>) -> Option<String> {
    let items: Vec<&str> = value?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!items.is_empty()).then(|| items.join(", "))
}

/// The objects of an apply, recorded as `{object, existed}` each.
fn list_of_objects(value: Option<&Value>) -> Option<String> {
    let items: Vec<&str> = value?
        .as_array()?
        .iter()
        .filter_map(|o| o.get("object").and_then(Value::as_str))
        .collect();
    (!items.is_empty()).then(|| items.join(", "))
}

fn minutes_text(minutes: u64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// `2026-11-23T14:02:00Z` as `2026-11-23 14:02 UTC`; anything else as it is.
fn short_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(at) => at
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_approval_reads_with_its_count_and_comment() {
        let detail = json!({"comment": "matches the incident", "digest": "sha256:x", "counted": 1, "required": 2});
        assert_eq!(
            sentence("request.approved", "bob", &detail),
            "bob approved (1 of 2): matches the incident"
        );
    }

    #[test]
    fn an_approval_recorded_before_counts_were_kept_reads_without_them() {
        let detail = json!({"comment": "", "digest": "sha256:x"});
        assert_eq!(sentence("request.approved", "bob", &detail), "bob approved");
    }

    #[test]
    fn a_filing_says_how_long_on_what_and_why() {
        let detail = json!({
            "objects": ["Deployment payments/api"],
            "duration_minutes": 90,
            "justification": "INC-1 hotfix",
        });
        assert_eq!(
            sentence("request.created", "alice", &detail),
            "alice asked for breakglass for 1 h 30 min on Deployment payments/api: INC-1 hotfix"
        );
    }

    #[test]
    fn the_machine_steps_read_as_what_happened() {
        assert_eq!(
            sentence(
                "request.fully_approved",
                "carol",
                &json!({"rule": "1 from sre"})
            ),
            "Fully approved (1 from sre)"
        );
        assert_eq!(
            sentence(
                "request.applied",
                "breakglass-broker",
                &json!({"expires_at": "2026-11-23T14:32:00Z"})
            ),
            "Applied with breakglass until 2026-11-23 14:32 UTC"
        );
        assert_eq!(
            sentence(
                "request.expired",
                "breakglass-broker",
                &json!({"objects": [{"object": "Deployment payments/api", "did": "restored", "changed_by_others": []}]})
            ),
            "Time was up; the broker undid the breakglass (Deployment payments/api restored)"
        );
        assert_eq!(
            sentence(
                "request.failed",
                "breakglass-broker",
                &json!({"error": "forbidden"})
            ),
            "The apply failed: forbidden"
        );
    }

    #[test]
    fn a_rejection_and_a_close_carry_their_reason() {
        assert_eq!(
            sentence(
                "request.rejected",
                "dave",
                &json!({"comment": "wrong image"})
            ),
            "dave rejected it: wrong image"
        );
        assert_eq!(
            sentence(
                "request.close_requested",
                "alice",
                &json!({"comment": " ", "state": "active"})
            ),
            "alice asked to end it now"
        );
    }

    #[test]
    fn an_extension_names_both_requests() {
        assert_eq!(
            sentence(
                "request.extension_requested",
                "alice",
                &json!({"extension": "E1", "minutes": 30, "justification": "still mitigating"})
            ),
            "alice asked to extend it by 30 min (request E1): still mitigating"
        );
        assert_eq!(
            sentence(
                "request.extended",
                "bob",
                &json!({"extension": "E1", "expires_at": "2026-11-23T15:00:00Z"})
            ),
            "Extended until 2026-11-23 15:00 UTC by request E1; nothing was undone in between"
        );
        assert_eq!(
            sentence(
                "request.extension_granted",
                "bob",
                &json!({"extends": "O1", "expires_at": "2026-11-23T15:00:00Z"})
            ),
            "Granted: request O1 now runs until 2026-11-23 15:00 UTC"
        );
    }

    #[test]
    fn a_disabled_endpoint_names_itself_and_the_status() {
        assert_eq!(
            sentence(
                "notification.disabled",
                "breakglass-broker",
                &json!({"endpoint": "siem", "status": 410})
            ),
            "Notification endpoint siem answered HTTP 410; it is disabled until its configuration changes"
        );
    }

    #[test]
    fn a_review_reads_as_what_was_written() {
        assert_eq!(
            sentence(
                "request.reviewed",
                "alice",
                &json!({"review": "the cache expired; INC-1 postmortem"})
            ),
            "alice wrote the review: the cache expired; INC-1 postmortem"
        );
    }

    #[test]
    fn every_known_action_reads_as_a_sentence_not_its_name() {
        for action in AuditAction::ALL {
            let s = sentence(action.as_str(), "bob", &json!({}));
            assert!(!s.contains("request."), "{action}: {s}");
        }
        assert_eq!(
            sentence("request.something_new", "bob", &json!({})),
            "bob: request.something_new"
        );
    }
}
