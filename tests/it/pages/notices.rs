//! What the pages say about notifications: the request page names who was notified and
//! whether it reached them; auditors' dashboards list what the broker gave up on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use breakglass_broker::config::{NotificationConfig, NotificationKind};
use breakglass_broker::dev;
use reqwest::StatusCode;

use super::{page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// A receiver on loopback that answers every message with the status it is set to.
async fn receiver(status: Arc<AtomicU16>) -> url::Url {
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(move || {
            let status = status.clone();
            async move {
                axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).expect("status")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url.parse().expect("URL")
}

fn endpoint(name: &str, kind: NotificationKind, url: url::Url) -> NotificationConfig {
    let mut endpoint: NotificationConfig = toml::from_str(&format!(
        "name = \"{name}\"\nkind = \"{}\"\nurl_env = \"UNUSED\"\n{}",
        match kind {
            NotificationKind::Slack => "slack",
            NotificationKind::Webhook => "webhook",
        },
        match kind {
            NotificationKind::Slack => "",
            NotificationKind::Webhook => "secret_env = \"UNUSED_SECRET\"\n",
        }
    ))
    .expect("endpoint");
    endpoint.endpoint = Some(url);
    endpoint.secret = Some(vec![7; 32]);
    if kind == NotificationKind::Slack {
        endpoint.secret = None;
    }
    endpoint
}

async fn start(slack: url::Url, hook: url::Url) -> TestEnv {
    TestEnv::start_with(|options| {
        dev::start_notifying(
            options,
            vec![
                endpoint("team-slack", NotificationKind::Slack, slack),
                endpoint("siem", NotificationKind::Webhook, hook),
            ],
        )
    })
    .await
}

/// The text of the page's Notifications section, tags dropped, spaces collapsed.
fn section(html: &str, heading: &str) -> Option<String> {
    let start = html.find(&format!("<h2>{heading}</h2>"))?;
    let end = html[start..].find("</section>")? + start;
    let mut text = String::new();
    let mut in_tag = false;
    for c in html[start..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[tokio::test]
async fn the_request_page_says_who_was_notified_and_auditors_see_what_was_given_up() {
    let slack_status = Arc::new(AtomicU16::new(200));
    let hook_status = Arc::new(AtomicU16::new(503));
    let env = start(
        receiver(slack_status.clone()).await,
        receiver(hook_status.clone()).await,
    )
    .await;
    let (id, _) = env.file_ok(&deployment("told", HOTFIX_IMAGE), 60).await;
    let bob = sign_in(&env, "bob").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let notices = loop {
        let (status, html) = page(&env, &bob, &format!("/requests/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let notices = section(&html, "Notifications").expect("a Notifications section");
        if notices.contains("retrying") && notices.contains("delivered") {
            break notices;
        }
        assert!(tokio::time::Instant::now() < deadline, "{notices}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        notices.contains("team-slack request.created delivered"),
        "{notices}"
    );
    assert!(
        notices.contains(
            "siem request.created retrying (1 tries; last: HTTP 503 Service Unavailable)"
        ),
        "{notices}"
    );
    assert!(
        !notices.contains("127.0.0.1"),
        "no endpoint URL on the page: {notices}"
    );

    // A day of 503s: the broker gives up, and auditors see it first on their dashboard.
    env.clock.advance(Duration::from_secs(25 * 3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
        let given_up = body["notifications"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["status"] == "not delivered"));
        if given_up {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dave = sign_in(&env, "dave").await;
    let (status, html) = page(&env, &dave, "/").await;
    assert_eq!(status, StatusCode::OK);
    let alarm = section(&html, "Notifications not delivered").expect("the auditors' alarm");
    assert!(
        alarm.contains("siem: request.created for")
            && alarm.contains(&id)
            && alarm.contains("gave up after 2 tries"),
        "{alarm}"
    );
    let bob = sign_in(&env, "bob").await;
    let (_, html) = page(&env, &bob, "/").await;
    assert!(
        section(&html, "Notifications not delivered").is_none(),
        "only auditors"
    );
}

#[tokio::test]
async fn a_410_is_audited_and_auditors_see_the_endpoint_disabled_until_its_configuration_changes() {
    let slack_status = Arc::new(AtomicU16::new(200));
    let hook_status = Arc::new(AtomicU16::new(410));
    let env = start(
        receiver(slack_status.clone()).await,
        receiver(hook_status.clone()).await,
    )
    .await;
    let (id, digest) = env.file_ok(&deployment("gone", HOTFIX_IMAGE), 60).await;
    // The 410 disables the endpoint, and the audit history says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let disabled = loop {
        let (status, events) = env
            .get("dave", &format!("/api/v1/audit?request={id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{events}");
        let found = events.as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["action"] == "notification.disabled")
                .cloned()
        });
        if let Some(event) = found {
            break event;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(disabled["detail"]["endpoint"], "siem", "{disabled}");
    assert_eq!(disabled["detail"]["status"], 410, "{disabled}");

    // What it would have been sent later is marked, not dropped in silence.
    let (status, body) = env.approve("bob", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
        let not_sent = body["notifications"].as_array().is_some_and(|n| {
            n.iter().any(|n| {
                n["endpoint"] == "siem"
                    && n["event"] == "request.approved"
                    && n["status"] == "not delivered"
                    && n["outcome"]
                        .as_str()
                        .is_some_and(|o| o.contains("the endpoint is disabled"))
            })
        });
        if not_sent {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dave = sign_in(&env, "dave").await;
    let (status, html) = page(&env, &dave, "/").await;
    assert_eq!(status, StatusCode::OK);
    let banner = section(&html, "Notification endpoints disabled").expect("the disabled endpoints");
    assert!(banner.contains("siem: disabled since"), "{banner}");
    assert!(!banner.contains("team-slack"), "{banner}");
    let undelivered = section(&html, "Notifications not delivered").expect("the list");
    assert!(
        undelivered.contains("siem: request.approved for")
            && undelivered.contains("not sent: the endpoint is disabled"),
        "{undelivered}"
    );
    assert!(
        undelivered.contains("siem: request.created for") && undelivered.contains("refused: 410"),
        "{undelivered}"
    );
    let (_, html) = page(&env, &dave, &format!("/requests/{id}")).await;
    assert!(
        html.contains("Notification endpoint siem answered HTTP 410"),
        "the request's timeline"
    );
    let bob = sign_in(&env, "bob").await;
    let (_, html) = page(&env, &bob, "/").await;
    assert!(
        section(&html, "Notification endpoints disabled").is_none(),
        "only auditors"
    );

    // The operator points the endpoint elsewhere: a broker with that configuration on the same
    // database no longer counts it disabled.
    let clock = breakglass_broker::clock::Clock::manual(env.clock.now());
    let moved = receiver(Arc::new(AtomicU16::new(200))).await;
    let slack = receiver(slack_status).await;
    let again = dev::start_notifying(
        dev::DevOptions {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: env.dir.path().to_owned(),
            clock: clock.clone(),
            decision_max_age: dev::DECISION_MAX_AGE,
        },
        vec![
            endpoint("team-slack", NotificationKind::Slack, slack),
            endpoint("siem", NotificationKind::Webhook, moved),
        ],
    )
    .await
    .expect("a broker with the new configuration");
    let again = TestEnv {
        env: again,
        clock,
        http: reqwest::Client::new(),
        dir: tempfile::tempdir().expect("temp dir"),
    };
    let dave = sign_in(&again, "dave").await;
    let (status, html) = page(&again, &dave, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        section(&html, "Notification endpoints disabled").is_none(),
        "enabled again by the new configuration"
    );
}
