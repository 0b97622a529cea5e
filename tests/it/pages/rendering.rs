//! How the request page renders objects: no value can pass for a field, the broker's stamps
//! are marked where they sit, and what runs now shows none of its inline data to the reader.

use kube::api::{Patch, PatchParams};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::request_page::{attested_image, deployer};
use super::{page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv};

/// A Deployment of one container, with `annotations` on its pod template, as manifest text
/// (JSON, which is YAML).
fn manifest(name: &str, container: Value, annotations: Value) -> String {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [container]}
            }
        }
    })
    .to_string()
}

/// Puts `manifest` in the cluster the ordinary way, as the release pipeline.
async fn release(env: &TestEnv, name: &str, manifest: Value) {
    deployer(env)
        .await
        .patch(
            name,
            &PatchParams::apply("pipeline").force(),
            &Patch::Apply(&manifest),
        )
        .await
        .expect("the release is admitted");
}

fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// Each line a reader sees in the page's `<pre class="{class}">` blocks, with the class of the
/// span it sits in (a line break inside a span starts a new line on screen too).
fn pre_lines(html: &str, class: &str) -> Vec<(String, String)> {
    let opening = format!("<pre class=\"{class}\">");
    html.split(&opening)
        .skip(1)
        .flat_map(|block| {
            let block = &block[..block.find("</pre>").expect("end of pre")];
            block
                .split("<span class=\"")
                .skip(1)
                .flat_map(|span| {
                    let (class, rest) = span.split_once("\">").expect("span class");
                    let text = rest.split("</span>").next().unwrap_or_default();
                    unescape(text.trim_end_matches('\n'))
                        .lines()
                        .map(|line| (class.to_owned(), line.to_owned()))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The YAML of "As it will be applied": (marked as the broker's, the line without its marker).
fn applied_lines(html: &str) -> Vec<(bool, String)> {
    pre_lines(html, "yaml")
        .into_iter()
        .map(|(class, text)| {
            let stamped = class == "stamp";
            let text = text
                .strip_prefix(if stamped { "▸ " } else { "  " })
                .expect("every line starts with its marker or its space")
                .to_owned();
            (stamped, text)
        })
        .collect()
}

/// A line's field, read as a person reads it: indentation and a list dash do not count.
fn field(line: &str) -> &str {
    line.trim_start().trim_start_matches("- ")
}

/// The first column of the page's image table.
fn image_table(html: &str) -> Vec<String> {
    let table = html
        .split("<table class=\"images\">")
        .nth(1)
        .expect("an image table");
    let table = &table[..table.find("</table>").expect("end of table")];
    table
        .split("<tr><td><code>")
        .skip(1)
        .map(|row| unescape(row.split("</code>").next().unwrap_or_default()))
        .collect()
}

const FAKE_IMAGE: &str = "us-docker.pkg.dev/acme/release/api@sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[tokio::test]
async fn a_value_with_a_line_break_is_shown_quoted_on_its_keys_line_and_never_as_an_image_line() {
    let env = TestEnv::start().await;
    release(
        &env,
        "checkout",
        serde_json::from_str(&manifest(
            "checkout",
            json!({"name": "checkout", "image": attested_image()}),
            json!({}),
        ))
        .expect("json"),
    )
    .await;
    let forged = format!("see the runbook\n        image: {FAKE_IMAGE}");
    let (id, _) = env
        .file_ok(
            &manifest(
                "checkout",
                json!({
                    "name": "checkout",
                    "image": HOTFIX_IMAGE,
                    "env": [{"name": "NOTE", "value": forged}]
                }),
                json!({"note": forged}),
            ),
            60,
        )
        .await;
    let bob = sign_in(&env, "bob").await;

    let (status, html) = page(&env, &bob, &format!("/requests/{id}")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(image_table(&html), vec![HOTFIX_IMAGE.to_owned()]);
    let quoted = format!("\"see the runbook\\n        image: {FAKE_IMAGE}\"");
    let applied: Vec<String> = applied_lines(&html).into_iter().map(|(_, t)| t).collect();
    let image_lines: Vec<&str> = applied
        .iter()
        .map(|l| field(l))
        .filter(|l| l.starts_with("image:"))
        .collect();
    assert_eq!(
        image_lines,
        vec![format!("image: {HOTFIX_IMAGE}")],
        "{applied:#?}"
    );
    for key in ["value", "note"] {
        assert!(
            applied
                .iter()
                .any(|l| field(l) == format!("{key}: {quoted}")),
            "{key} on one quoted line: {applied:#?}"
        );
    }
    // The diff against what runs now draws the same lines: the real images go and come.
    let diff = pre_lines(&html, "diff");
    let diff_images: Vec<(&str, &str)> = diff
        .iter()
        .map(|(class, text)| (class.as_str(), field(&text[1..])))
        .filter(|(_, text)| text.starts_with("image:"))
        .collect();
    let release_line = format!("image: {}", attested_image());
    let hotfix_line = format!("image: {HOTFIX_IMAGE}");
    assert_eq!(
        diff_images,
        vec![
            ("del", release_line.as_str()),
            ("ins", hotfix_line.as_str())
        ],
        "{diff:#?}"
    );
    assert!(
        diff.iter()
            .any(|(class, text)| class == "ins" && field(&text[1..]) == format!("note: {quoted}")),
        "{diff:#?}"
    );
}

#[tokio::test]
async fn every_stamp_of_the_broker_is_marked_and_a_value_that_only_says_a_stamps_key_is_not() {
    let env = TestEnv::start().await;
    let (id, _) = env
        .file_ok(
            &manifest(
                "marked",
                json!({
                    "name": "marked",
                    "image": HOTFIX_IMAGE,
                    "args": ["breakglass-broker.io/ticket: INC-1", "image-policy.k8s.io/break-glass"],
                    "env": [{"name": "MARK", "value": "breakglass-broker.io/request-id: forged"}]
                }),
                json!({"note": "fine\nbreakglass-broker.io/approvers: mallory"}),
            ),
            60,
        )
        .await;
    let bob = sign_in(&env, "bob").await;

    let (status, html) = page(&env, &bob, &format!("/requests/{id}")).await;

    assert_eq!(status, StatusCode::OK);
    let lines = applied_lines(&html);
    let mut stamps: Vec<String> = lines
        .iter()
        .filter(|(stamped, _)| *stamped)
        .map(|(_, text)| text.trim().to_owned())
        .collect();
    stamps.sort();
    let mut expected = vec![
        "breakglass-broker.io/approvers: \"\"".to_owned(),
        "breakglass-broker.io/expires-at: \"(set when applied)\"".to_owned(),
        format!("breakglass-broker.io/request-id: {id}"),
        "breakglass-broker.io/requester: alice".to_owned(),
        "breakglass-broker.io/ticket: INC-4242".to_owned(),
        "breakglass-broker.io/ticket: INC-4242".to_owned(),
        "image-policy.k8s.io/break-glass: \"true\"".to_owned(),
    ];
    // Once on the Deployment, once on its pod template.
    expected.extend(expected.clone());
    expected.sort();
    assert_eq!(stamps, expected);
    let users: Vec<&str> = lines
        .iter()
        .filter(|(_, text)| {
            text.contains("INC-1") || text.contains("forged") || text.contains("mallory")
        })
        .map(|(stamped, text)| {
            assert!(!stamped, "a user's value marked as a stamp: {text}");
            field(text)
        })
        .collect();
    assert_eq!(
        users,
        vec![
            "note: \"fine\\nbreakglass-broker.io/approvers: mallory\"",
            "\"breakglass-broker.io/ticket: INC-1\"",
            "value: \"breakglass-broker.io/request-id: forged\"",
        ],
        "{lines:#?}"
    );
    let bare_key = lines
        .iter()
        .find(|(_, text)| field(text) == "image-policy.k8s.io/break-glass")
        .expect("the argument that names the breakglass label");
    assert!(!bare_key.0, "an argument marked as a stamp");
}

#[tokio::test]
async fn the_diff_hides_what_runs_now_unless_the_request_sets_the_same_value() {
    let env = TestEnv::start().await;
    let mut live: Value = serde_json::from_str(&manifest(
        "checkout",
        json!({
            "name": "checkout",
            "image": attested_image(),
            "command": ["/bin/api", "--token=s3cret-command"],
            "env": [
                {"name": "SAME", "value": "shared-value"},
                {"name": "CHANGED", "value": "s3cret-old"},
                {"name": "ONLY_LIVE", "value": "s3cret-live"}
            ]
        }),
        json!({"vault.example/token": "s3cret-annotation"}),
    ))
    .expect("json");
    live["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{\"env\":\"s3cret-applied\"}"
    });
    release(&env, "checkout", live).await;
    let (id, _) = env
        .file_ok(
            &manifest(
                "checkout",
                json!({
                    "name": "checkout",
                    "image": HOTFIX_IMAGE,
                    "env": [
                        {"name": "SAME", "value": "shared-value"},
                        {"name": "CHANGED", "value": "new-value"}
                    ]
                }),
                json!({}),
            ),
            60,
        )
        .await;

    for persona in ["alice", "bob"] {
        let client = sign_in(&env, persona).await;
        let (status, html) = page(&env, &client, &format!("/requests/{id}")).await;

        assert_eq!(status, StatusCode::OK);
        assert!(
            !html.contains("s3cret"),
            "{persona} sees a live value: {html}"
        );
        let diff: Vec<String> = pre_lines(&html, "diff")
            .into_iter()
            .map(|(_, text)| format!("{}{}", &text[..1], field(&text[1..])))
            .collect();
        for line in [
            // Set the same by the request: the reader knows it, it stays shown and unchanged.
            " value: shared-value",
            // Changed: the old value is hidden, the request's own is shown.
            "-value: (hidden)",
            "+value: new-value",
            // Only in what runs now: the name shows, its value does not.
            "-name: ONLY_LIVE",
            "-command: (hidden)",
            "-vault.example/token: (hidden)",
            "-kubectl.kubernetes.io/last-applied-configuration: (hidden)",
        ] {
            assert!(diff.iter().any(|l| l == line), "{line} in {diff:#?}");
        }
    }
}
