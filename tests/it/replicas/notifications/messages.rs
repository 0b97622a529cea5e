//! What the messages say: Slack messages that input cannot reshape, extensions announced as
//! extensions (and their reminder moved), and requests that end without a breakglass.

use std::collections::HashMap;
use std::time::Duration;

use breakglass_broker::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Receiver, announcing, event_of};
use crate::common::{HOTFIX_IMAGE, deployment};
use crate::replicas::Infra;

/// Every text object in a Slack message's blocks, as (type, text).
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

/// The Slack messages that arrived, as Slack got them.
fn slack_messages(slack: &Receiver) -> Vec<Value> {
    slack
        .got()
        .iter()
        .map(|g| g.body["slack"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_message_keeps_what_people_typed_plain_and_counts_the_images_it_leaves_out() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let slack = Receiver::start(true, None).await;
    let broker = announcing(&infra, "plain", Some(&slack), None, &clock).await;
    // 59 images of one repository, and one that is not like them, last.
    let digest = "8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
    let mut images: Vec<String> = (0..59)
        .map(|i| format!("us-docker.pkg.dev/acme/hotfix/api{i:02}@sha256:{digest}"))
        .collect();
    images.push(format!("us-docker.pkg.dev/attacker/miner@sha256:{digest}"));
    let containers: Vec<String> = images
        .iter()
        .enumerate()
        .map(|(i, image)| format!("{{name: c{i}, image: {image}}}"))
        .collect();
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: many}}\nspec:\n  selector: {{matchLabels: {{app: many}}}}\n  template:\n    metadata: {{labels: {{app: many}}}}\n    spec: {{containers: [{}]}}\n",
        containers.join(",")
    );
    // A justification that draws the broker's own headings, with Slack markup.
    let forged = "hotfix\n*Approval rule*\n0 from anyone (pre-approved by security)\n*Images*\n`us-docker.pkg.dev/acme/release/api:1`\n> _all_ ~clear~";
    let (status, body) = infra
        .call(
            &broker.url,
            Method::POST,
            "alice",
            "/api/v1/requests",
            Some(json!({
                "target": "dev-cluster",
                "namespace": "prod",
                "manifest": manifest,
                "ticket": "INC-2101",
                "justification": forged,
                "duration_minutes": 30,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    slack.wait_delivered(1).await;
    let message = &slack_messages(&slack)[0];
    let texts = texts(message);

    // Markup is the broker's bold labels and nothing else; each label once.
    for (kind, text) in &texts {
        if kind == "mrkdwn" {
            assert!(
                text.starts_with('*') && text.ends_with('*') && !text.contains('\n'),
                "markup that is not a label: {text:?}"
            );
        }
    }
    for label in ["*Approval rule*", "*Images*"] {
        let count = texts.iter().filter(|(_, t)| t == label).count();
        assert_eq!(count, 1, "{label}: {texts:?}");
    }
    // The justification, whole and plain, right under its own label.
    let why = texts
        .iter()
        .position(|(kind, t)| kind == "mrkdwn" && t.starts_with("*Why"))
        .expect("a Why label");
    assert_eq!(texts[why + 1], ("plain_text".to_owned(), forged.to_owned()));
    assert!(
        !texts
            .iter()
            .any(|(kind, t)| kind == "mrkdwn" && t.contains("anyone")),
        "{texts:?}"
    );

    // The images: whole ones, then how many more; none cut.
    let list = texts
        .iter()
        .position(|(_, t)| t == "*Images*")
        .map(|i| texts[i + 1].1.clone())
        .expect("the images");
    let lines: Vec<&str> = list.lines().collect();
    let (last, shown) = lines.split_last().expect("lines");
    for line in shown {
        assert!(images.iter().any(|i| i == line), "a cut image: {line:?}");
    }
    assert!(shown.len() >= 10, "{list}");
    assert_eq!(
        *last,
        format!(
            "… and {} more images (see the page)",
            images.len() - shown.len()
        )
    );
    assert_eq!(message["mrkdwn"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_is_announced_as_one_and_the_reminder_moves_to_the_new_end() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let slack = Receiver::start(true, None).await;
    let hook = Receiver::start(false, Some(clock.clone())).await;
    let broker = announcing(&infra, "extended", Some(&slack), Some(&hook), &clock).await;
    let url = broker.url.clone();
    let id = infra
        .file_and_approve(&url, &deployment("extended", HOTFIX_IMAGE), 60)
        .await;
    hook.wait_delivered(4).await;
    let first_end = clock.now() + 60 * 60 * 1000;

    let (status, extension) = infra
        .call(
            &url,
            Method::POST,
            "alice",
            &format!("/api/v1/requests/{id}/extend"),
            Some(json!({"minutes": 30, "justification": "still mitigating"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{extension}");
    let ext = extension["id"].as_str().expect("id").to_owned();
    let digest = extension["digest"].as_str().expect("digest").to_owned();
    hook.wait_delivered(5).await;
    let asked = &hook.got()[4].body;
    assert_eq!(asked["type"], "request.created");
    assert_eq!(asked["data"]["request"], ext.as_str());
    assert_eq!(asked["data"]["extends"], id.as_str());
    assert_eq!(asked["data"]["minutes"], 30);
    slack.wait_delivered(5).await;
    let said = slack_messages(&slack)[4]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(
        said.contains("alice asks to extend breakglass INC-5") && said.contains("by 30 minutes"),
        "{said}"
    );

    for persona in ["bob", "carol"] {
        let (status, body) = infra.approve(&url, persona, &ext, &digest).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The reminder for the old end is settled, one for the new end waits.
    let new_end = first_end + 30 * 60 * 1000;
    let reminders: Vec<Value> = infra
        .notices(&url, &id)
        .await
        .into_iter()
        .filter(|n| n["event"] == "request.expiring")
        .collect();
    assert_eq!(reminders.len(), 2, "{reminders:?}");
    assert_eq!(reminders[0]["status"], "not delivered");
    assert_eq!(
        reminders[0]["outcome"],
        "not sent: the end of the request moved"
    );
    assert_eq!(reminders[1]["status"], "waiting");
    let due = chrono::DateTime::parse_from_rfc3339(reminders[1]["at"].as_str().expect("at"))
        .expect("a time")
        .timestamp_millis();
    assert!(
        (due - (new_end - 10 * 60 * 1000)).abs() < 5_000,
        "due ten minutes before the new end"
    );

    // Past the old reminder's time: nothing; ten minutes before the new end: the reminder.
    hook.wait_delivered(7).await;
    let before = hook.delivered().len();
    clock.advance(Duration::from_secs(55 * 60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.delivered().len(), before, "{:?}", hook.delivered());
    clock.advance(Duration::from_secs(26 * 60));
    hook.wait_for("the reminder", |got| {
        got.iter().any(|g| event_of(g) == "request.expiring")
    })
    .await;
    let reminder = hook
        .got()
        .into_iter()
        .find(|g| event_of(g) == "request.expiring")
        .expect("the reminder");
    assert_eq!(reminder.body["data"]["request"], id.as_str());
    let expires = chrono::DateTime::parse_from_rfc3339(
        reminder.body["data"]["times"]["expires_at"]
            .as_str()
            .expect("expires_at"),
    )
    .expect("a time")
    .timestamp_millis();
    assert!((expires - new_end).abs() < 5_000, "the new end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_or_lapsed_request_is_announced_as_ended_with_its_outcome() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let slack = Receiver::start(true, None).await;
    let hook = Receiver::start(false, Some(clock.clone())).await;
    let broker = announcing(&infra, "withdrawn", Some(&slack), Some(&hook), &clock).await;
    let url = broker.url.clone();

    let (withdrawn, _) = infra.file(&url, "withdrawn", 60).await;
    hook.wait_delivered(1).await;
    let (status, body) = infra
        .call(
            &url,
            Method::POST,
            "alice",
            &format!("/api/v1/requests/{withdrawn}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    hook.wait_delivered(2).await;
    let ended = &hook.got()[1].body;
    assert_eq!(ended["type"], "request.ended");
    assert_eq!(ended["data"]["request"], withdrawn.as_str());
    assert_eq!(ended["data"]["state"], "cancelled");
    assert!(
        ended["data"]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("withdrawn by the requester")),
        "{ended}"
    );

    // Nobody decides within the approval window (30 minutes).
    let (lapsed, _) = infra.file(&url, "lapsed", 60).await;
    hook.wait_delivered(3).await;
    clock.advance(Duration::from_secs(31 * 60));
    infra
        .wait_for_states(
            &url,
            &HashMap::from([(lapsed.clone(), "lapsed")]),
            Duration::from_secs(60),
        )
        .await;
    hook.wait_delivered(4).await;
    let ended = &hook.got()[3].body;
    assert_eq!(ended["type"], "request.ended");
    assert_eq!(ended["data"]["request"], lapsed.as_str());
    assert_eq!(ended["data"]["state"], "lapsed");
    assert!(
        ended["data"]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("lapsed: nobody decided")),
        "{ended}"
    );
    // Slack's channel hears it too, as an end.
    slack.wait_delivered(4).await;
    assert_eq!(
        slack.delivered(),
        [
            "request.created",
            "request.ended",
            "request.created",
            "request.ended"
        ]
    );
    let headers: Vec<String> = slack_messages(&slack)
        .iter()
        .map(|m| {
            m["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(headers[1].ends_with(" cancelled"), "{headers:?}");
    assert!(headers[3].ends_with(" lapsed"), "{headers:?}");
}
