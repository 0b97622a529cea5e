//! The auditor's view over HTTP: search, the view per ticket, exports, verification, and who
//! sees what. Tampering with the database itself is in `audit/tamper.rs`.

mod checkpoints;
mod tamper;

use std::time::Duration;

use breakglass_broker::audit::export::CSV_COLUMNS;
use breakglass_broker::clock::rfc3339;
use breakglass_broker::domain::AuditAction;
use breakglass_broker::store::{GENESIS_HASH, NewEvent, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};
use crate::policy_env::{STRICT, start_with_strict_target, strict_deployment, strict_request};

/// Files a request as `persona` under `ticket` in `namespace`; returns its id.
async fn file_as(
    env: &TestEnv,
    persona: &str,
    name: &str,
    ticket: &str,
    namespace: &str,
) -> String {
    env.file_under(
        persona,
        namespace,
        &deployment(name, HOTFIX_IMAGE),
        ticket,
        30,
    )
    .await
}

fn events(body: &Value) -> &Vec<Value> {
    body.as_array().expect("a list of events")
}

fn seqs(body: &Value) -> Vec<i64> {
    events(body)
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

/// A GET with the persona's token, returning the raw response (headers, streamed bodies).
async fn raw(env: &TestEnv, persona: &str, path: &str) -> reqwest::Response {
    let token = env.token(persona).await;
    env.http
        .get(env.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("broker answers")
}

#[tokio::test]
async fn a_real_breakglass_history_verifies_and_an_edit_to_it_is_named() {
    let env = TestEnv::start().await;
    let id = env.activate("payments-api", 60).await;
    let url = format!("sqlite://{}", env.dir.path().join("broker.db").display());

    let verdict = tamper::verify(&url, None).await;
    assert_eq!(verdict.code, 0, "{}", verdict.stderr);
    let (status, report) = env
        .post("dave", "/api/v1/audit/verification", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["verified_through"], report["head"]["seq"]);

    // Someone with database access makes bob's approval look like mallory's.
    let (_, timeline) = env
        .get("dave", &format!("/api/v1/audit?request={id}&actor=bob"))
        .await;
    let seq = seqs(&timeline)[0];
    sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = $1")
        .bind(seq)
        .execute(env.env.broker.state.store.pool())
        .await
        .expect("edit");

    let verdict = tamper::verify(&url, None).await;
    assert_eq!(verdict.code, 1, "{}", verdict.stdout);
    assert!(
        verdict.stderr.contains(&format!(
            "audit chain broken at seq {seq}: event {seq} was edited"
        )),
        "{}",
        verdict.stderr
    );
    let (_, report) = env
        .post("dave", "/api/v1/audit/verification", json!({}))
        .await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_bad_seq"], seq);
    assert_eq!(report["verified_through"], seq - 1);
    assert_eq!(report["problem"]["kind"], "edited");

    // The page reads the last check instead of walking the history on every view.
    let (status, last) = env.get("dave", "/api/v1/audit/verification").await;
    assert_eq!(status, StatusCode::OK, "{last}");
    assert_eq!(last["last_check"]["first_bad_seq"], seq);
    assert_eq!(last["last_check"]["verified_through"], seq - 1);
    assert!(
        last["last_check"]["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("event {seq} was edited"))),
        "{last}"
    );

    let (status, _) = env.get("alice", "/api/v1/audit/verification").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .post("alice", "/api/v1/audit/verification", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_broker_verifies_the_chain_every_few_minutes_and_records_how_far() {
    let env = TestEnv::start().await;
    env.activate("inventory", 60).await;
    let (_, before) = env.get("dave", "/api/v1/audit/verification").await;
    assert_eq!(before["last_check"], Value::Null, "nothing checked yet");

    env.clock.advance(Duration::from_secs(5 * 60));
    // Normally well under a second; generous for a busy CI machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let (_, body) = env.get("dave", "/api/v1/audit/verification").await;
        if !body["last_check"].is_null() {
            break body["last_check"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no check recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last["head_seq"], 6, "{last}");
    assert_eq!(last["verified_through"], 6);
    assert_eq!(last["problem"], Value::Null);
}

#[tokio::test]
async fn auditors_search_by_ticket_person_target_namespace_action_and_time_newest_first() {
    let env = start_with_strict_target().await;
    let t0 = env.clock.now();
    let first = file_as(&env, "alice", "cart", "INC-100", "prod").await;
    // Less than the approval window, so that nothing lapses in between.
    env.clock.advance(Duration::from_secs(20 * 60));
    let second = file_as(&env, "erin", "ledger", "INC-200", "default").await;
    let half_way = rfc3339(t0 + 10 * 60_000);

    let search = |query: String| {
        let env = &env;
        async move {
            let (status, body) = env.get("dave", &format!("/api/v1/audit?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body
        }
    };
    let by_ticket = search("ticket=INC-200".into()).await;
    assert_eq!(events(&by_ticket).len(), 1);
    assert_eq!(events(&by_ticket)[0]["request_id"], second.as_str());

    let by_person = search("actor=alice".into()).await;
    assert!(events(&by_person).iter().all(|e| e["actor"] == "alice"));
    assert_eq!(events(&by_person)[0]["request_id"], first.as_str());

    let created = search("action=request.created&target=dev-cluster".into()).await;
    let order: Vec<&str> = events(&created)
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [second.as_str(), first.as_str()], "newest first");
    let s = seqs(&created);
    assert!(s[0] > s[1]);

    let in_default = search("namespace=default".into()).await;
    assert_eq!(events(&in_default).len(), 1);
    assert_eq!(events(&in_default)[0]["namespace"], "default");

    let later = search(format!("since={half_way}")).await;
    assert_eq!(events(&later).len(), 1, "{later}");
    assert_eq!(events(&later)[0]["request_id"], second.as_str());
    let earlier = search(format!("until={}", half_way.replace('Z', "%2B00:00"))).await;
    assert_eq!(events(&earlier).len(), 1);
    assert_eq!(events(&earlier)[0]["request_id"], first.as_str());

    let nothing = search("ticket=INC-100&actor=erin".into()).await;
    assert!(events(&nothing).is_empty(), "filters combine with AND");

    // A request on the other target, filed last so the time searches above stay as they are:
    // each target's search returns its own events and none of the other's.
    env.clock.advance(Duration::from_secs(60));
    let (status, filed) = env
        .post(
            "alice",
            "/api/v1/requests",
            strict_request(&strict_deployment("cart")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let strict = filed["id"].as_str().expect("id").to_owned();
    let request_ids = |body: &Value| -> Vec<String> {
        events(body)
            .iter()
            .map(|e| e["request_id"].as_str().expect("request_id").to_owned())
            .collect()
    };
    let on_dev = search("target=dev-cluster".into()).await;
    assert_eq!(
        request_ids(&on_dev),
        [second.clone(), first.clone()],
        "{on_dev}"
    );
    assert!(events(&on_dev).iter().all(|e| e["target"] == "dev-cluster"));
    let on_strict = search(format!("target={STRICT}")).await;
    assert_eq!(
        request_ids(&on_strict),
        std::slice::from_ref(&strict),
        "{on_strict}"
    );
    assert_eq!(events(&on_strict)[0]["target"], STRICT);
    let everywhere = search("action=request.created".into()).await;
    assert_eq!(
        request_ids(&everywhere),
        [strict, second, first],
        "without the filter, both targets' events"
    );
}

#[tokio::test]
async fn search_pages_newest_first_with_a_link_to_the_next_page() {
    let env = TestEnv::start().await;
    for (persona, name) in [("alice", "a"), ("erin", "b"), ("alice", "c")] {
        file_as(&env, persona, name, "INC-300", "prod").await;
    }
    let mut path = "/api/v1/audit?ticket=INC-300&limit=2".to_owned();
    let mut pages = Vec::new();
    loop {
        let response = raw(&env, "dave", &path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let next = response
            .headers()
            .get("link")
            .map(|l| l.to_str().expect("ascii").to_owned());
        let body: Value = response.json().await.expect("JSON");
        pages.push(seqs(&body));
        let Some(link) = next else { break };
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        assert!(
            link.contains("ticket=INC-300") && link.contains("limit=2"),
            "{link}"
        );
        path = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("a URL")
            .to_owned();
        assert!(pages.len() < 5, "paging ends");
    }
    let all: Vec<i64> = pages.concat();
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    assert!(
        all.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {all:?}"
    );
}

#[tokio::test]
async fn bad_search_parameters_get_a_clear_400() {
    let env = TestEnv::start().await;
    let long = "X".repeat(300);
    let cases = [
        ("since=yesterday", "since must be an RFC 3339 time"),
        (
            "until=2026-13-01T00:00:00Z",
            "until must be an RFC 3339 time",
        ),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since must be earlier than until",
        ),
        ("limit=0", "limit must be a whole number from 1 to 1000"),
        ("limit=ten", "limit must be a whole number from 1 to 1000"),
        ("before=-3", "before must be an event's seq"),
        ("format=csv", "format applies to /api/v1/audit/export"),
        ("colour=blue", "unknown field `colour`"),
    ];
    for (query, message) in cases {
        let (status, body) = env.get("dave", &format!("/api/v1/audit?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(message)),
            "{query}: {body}"
        );
    }
    let (status, body) = env
        .get("dave", &format!("/api/v1/audit?ticket={long}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = env.get("dave", "/api/v1/audit/export?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "format must be csv or jsonl, not \"xml\"");
    let (status, _) = env
        .get("dave", "/api/v1/audit/export?format=csv&limit=5")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .get("dave", "/api/v1/audit/export?format=csv&since=soon")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_ticket_view_lists_every_request_under_it_with_its_timeline() {
    let env = TestEnv::start().await;
    let id = env.activate("orders", 60).await;
    env.clock.advance(Duration::from_secs(1));
    let other = file_as(&env, "erin", "orders-db", "INC-4242", "prod").await;
    file_as(&env, "erin", "elsewhere", "INC-7", "prod").await;

    let (status, view) = env.get("dave", "/api/v1/tickets/INC-4242").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["ticket"], "INC-4242");
    let requests = view["requests"].as_array().expect("requests");
    let ids: Vec<&str> = requests.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [other.as_str(), id.as_str()],
        "newest first, only this ticket"
    );

    let applied = &requests[1];
    assert_eq!(applied["state"], "active");
    assert_eq!(applied["requester"], "alice");
    let approvers: Vec<&str> = applied["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .map(|a| a["approver"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, ["bob", "carol"]);
    let timeline: Vec<&str> = applied["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        timeline,
        [
            "request.created",
            "request.approved",
            "request.approved",
            "request.fully_approved",
            "request.applying",
            "request.applied"
        ],
        "oldest first"
    );

    let (status, _) = env.get("dave", "/api/v1/tickets/INC-0").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn people_see_only_the_requests_they_filed_or_may_decide_on() {
    let env = TestEnv::start().await;
    let alices = file_as(&env, "alice", "api", "INC-4242", "prod").await;
    env.clock.advance(Duration::from_secs(1));
    let erins = file_as(&env, "erin", "worker", "INC-4242", "prod").await;
    let ticket_ids = |view: &Value| -> Vec<String> {
        view["requests"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };

    // alice filed one and may approve none: she sees hers.
    let (status, view) = env.get("alice", "/api/v1/tickets/INC-4242").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ticket_ids(&view), std::slice::from_ref(&alices));
    let (status, _) = env
        .get("alice", &format!("/api/v1/audit?request={alices}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env
        .get("alice", &format!("/api/v1/audit?request={erins}"))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "not hers, not hers to decide"
    );

    // bob may approve both; erin filed one and may approve alice's.
    for persona in ["bob", "erin", "dave"] {
        let (status, view) = env.get(persona, "/api/v1/tickets/INC-4242").await;
        assert_eq!(status, StatusCode::OK, "{persona}");
        assert_eq!(
            ticket_ids(&view),
            [erins.clone(), alices.clone()],
            "{persona}"
        );
    }
    let (status, body) = env
        .get("bob", &format!("/api/v1/audit?request={erins}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events(&body)[0]["action"], "request.created");

    // mallory sees nothing, and cannot tell a ticket exists.
    let (status, _) = env.get("mallory", "/api/v1/tickets/INC-4242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env
        .get("mallory", &format!("/api/v1/audit?request={alices}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Searching everything, exporting and verifying are for auditors.
    for persona in ["alice", "bob", "mallory"] {
        for path in [
            "/api/v1/audit",
            "/api/v1/audit?ticket=INC-4242",
            "/api/v1/audit/export?format=csv",
            "/api/v1/audit/export?format=jsonl",
            "/api/v1/audit/verification",
        ] {
            let (status, body) = env.get(persona, path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{persona} {path}: {body}");
        }
    }
    let (status, _) = env
        .call(
            reqwest::Method::GET,
            None,
            "/api/v1/audit/export?format=csv",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_csv_export_holds_every_event_quoted_and_defused() {
    let env = TestEnv::start().await;
    env.activate("search", 60).await;
    // An event whose fields a spreadsheet would run as formulas, and one with quotes and commas.
    let store: &Store = &env.env.broker.state.store;
    let mut tx = store.begin().await.expect("begin");
    Store::append_audit(
        &mut tx,
        NewEvent {
            at: env.clock.now(),
            actor: "=HYPERLINK(\"http://evil.example\",\"click\")",
            person: None,
            action: AuditAction::Approved,
            request_id: None,
            ticket: Some("+INC-1"),
            target: Some("-x"),
            namespace: Some("@prod"),
            detail: json!({ "comment": "a, \"b\"\nc" }),
        },
    )
    .await
    .expect("append");
    tx.commit().await.expect("commit");

    let response = raw(&env, "dave", "/api/v1/audit/export?format=csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"audit-") && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let text = response.text().await.expect("body");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        CSV_COLUMNS
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    let (_, all) = env.get("dave", "/api/v1/audit?limit=1000").await;
    assert_eq!(rows.len(), events(&all).len(), "every event");
    let row_seqs: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        row_seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first"
    );

    let last = rows.last().expect("the crafted event");
    let cell = |name: &str| {
        let column = CSV_COLUMNS
            .iter()
            .position(|c| *c == name)
            .expect("a column");
        last[column].to_owned()
    };
    assert_eq!(
        cell("actor"),
        "'=HYPERLINK(\"http://evil.example\",\"click\")"
    );
    assert_eq!(cell("ticket"), "'+INC-1");
    assert_eq!(cell("target"), "'-x");
    assert_eq!(cell("namespace"), "'@prod");
    assert_eq!(
        cell("detail"),
        r#"{"comment":"a, \"b\"\nc"}"#,
        "quoted, read back whole"
    );
    let filed = rows
        .iter()
        .find(|r| &r[5] == "request.created")
        .expect("the filing");
    assert_eq!(
        (&filed[3], &filed[4]),
        (env.env.issuer.as_str(), "alice"),
        "the person who filed, by issuer and subject"
    );
}

#[tokio::test]
async fn the_jsonl_export_is_the_chain_in_order_and_takes_the_same_filters() {
    let env = TestEnv::start().await;
    let id = env.activate("billing", 60).await;
    file_as(&env, "erin", "other", "INC-9", "default").await;

    let response = raw(&env, "dave", "/api/v1/audit/export?format=jsonl").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(
        lines.len(),
        7,
        "six steps of the breakglass and one more request"
    );
    assert_eq!(lines[0]["prev_hash"], GENESIS_HASH);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "one unbroken chain");
    }

    let response = raw(
        &env,
        "dave",
        &format!(
            "/api/v1/audit/export?format=jsonl&ticket=INC-4242&actor=breakglass-broker&request={id}"
        ),
    )
    .await;
    let text = response.text().await.expect("body");
    let actions: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["request.applying", "request.applied"]);
}
