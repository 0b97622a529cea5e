//! Watches on the simulator, through kube-rs's `Api::watch` and plain HTTP: what is sent from
//! "0", what a resumed watch replays, 410 Expired past the kept history, selectors, deletes
//! (garbage collection included), and the parameters a watch refuses.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::api::{WatchEvent, WatchParams};

use super::*;

/// The next event, or an error when none comes within five seconds.
async fn next<S>(stream: &mut S) -> Result<WatchEvent<DynamicObject>, Box<dyn Error>>
where
    S: Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(event)) => Ok(event?),
        Ok(None) => Err("the watch ended".into()),
        Err(_) => Err("no event within 5 s".into()),
    }
}

/// (type, name) of an event, to compare whole sequences at once.
fn seen(event: &WatchEvent<DynamicObject>) -> (String, String) {
    let (kind, object) = match event {
        WatchEvent::Added(o) => ("ADDED", Some(o)),
        WatchEvent::Modified(o) => ("MODIFIED", Some(o)),
        WatchEvent::Deleted(o) => ("DELETED", Some(o)),
        WatchEvent::Bookmark(_) => ("BOOKMARK", None),
        WatchEvent::Error(_) => ("ERROR", None),
    };
    let name = object
        .and_then(|o| o.metadata.name.clone())
        .unwrap_or_default();
    (kind.to_owned(), name)
}

fn pair(kind: &str, name: &str) -> (String, String) {
    (kind.to_owned(), name.to_owned())
}

fn version(object: &DynamicObject) -> String {
    object.metadata.resource_version.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_watch_from_zero_sends_what_exists_then_every_change_and_each_delete_the_collector_makes()
-> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let owner = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    let client = sim.client(Some(TOKEN)).await?;
    let replicasets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "prod",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "ReplicaSet")),
    );
    let everywhere: Api<DynamicObject> = Api::all_with(
        client,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "ReplicaSet")),
    );
    let mut deployments = api.watch(&WatchParams::default(), "0").await?.boxed();
    let mut all_replicasets = everywhere
        .watch(&WatchParams::default(), "0")
        .await?
        .boxed();

    let first = next(&mut deployments).await?;
    let changed = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:2"), false)?,
    )
    .await?;
    let mut replicaset = deployment("api-5d8f", &format!("{ATTESTED}api:2"), false)?;
    replicaset.types = Some(kube::core::TypeMeta {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
    });
    replicaset.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "api".into(),
            uid: owner.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    replicasets
        .create(&PostParams::default(), &replicaset)
        .await?;
    api.delete("api", &DeleteParams::background()).await?;
    let mut events = vec![seen(&first)];
    for _ in 0..2 {
        events.push(seen(&next(&mut deployments).await?));
    }
    let mut replicaset_events = Vec::new();
    for _ in 0..2 {
        replicaset_events.push(seen(&next(&mut all_replicasets).await?));
    }

    assert_eq!(
        events,
        [
            pair("ADDED", "api"),
            pair("MODIFIED", "api"),
            pair("DELETED", "api")
        ]
    );
    assert_eq!(
        replicaset_events,
        [pair("ADDED", "api-5d8f"), pair("DELETED", "api-5d8f")],
        "the garbage collector's delete is an event too"
    );
    let WatchEvent::Added(added) = first else {
        return Err("the first event is not ADDED".into());
    };
    assert_eq!(version(&added), version(&owner));
    assert!(version(&changed) > version(&owner));
    let reads = sim.cluster.reads();
    assert_eq!(reads["deployments.apps"].watches, 1);
    assert_eq!(reads["replicasets.apps"].watches, 1);
    assert_eq!(reads.get("deployments.apps").map(|r| r.lists), Some(0));
    Ok(())
}

#[tokio::test]
async fn a_resumed_watch_replays_what_it_missed_and_one_from_a_forgotten_version_gets_410()
-> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let first = apply(&api, &deployment("one", &format!("{ATTESTED}a:1"), false)?).await?;
    apply(&api, &deployment("two", &format!("{ATTESTED}a:1"), false)?).await?;
    apply(
        &api,
        &deployment("three", &format!("{ATTESTED}a:1"), false)?,
    )
    .await?;

    let mut resumed = api
        .watch(&WatchParams::default(), &version(&first))
        .await?
        .boxed();
    let replayed = vec![
        seen(&next(&mut resumed).await?),
        seen(&next(&mut resumed).await?),
    ];
    sim.cluster.set_watch_history(1);
    let mut expired = api
        .watch(&WatchParams::default(), &version(&first))
        .await?
        .boxed();
    let answer = next(&mut expired).await?;
    let after = tokio::time::timeout(Duration::from_secs(5), expired.next()).await?;

    assert_eq!(replayed, [pair("ADDED", "two"), pair("ADDED", "three")]);
    let WatchEvent::Error(status) = answer else {
        return Err(format!("expected an ERROR event, got {answer:?}").into());
    };
    assert_eq!(status.code, 410);
    assert_eq!(status.reason, "Expired");
    assert!(
        status.message.contains("too old resource version"),
        "{}",
        status.message
    );
    assert!(after.is_none(), "the watch ends after its 410");
    assert_eq!(sim.cluster.reads()["deployments.apps"].expired_watches, 1);
    Ok(())
}

#[tokio::test]
async fn a_watch_with_a_label_selector_sees_an_object_enter_and_leave_it() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let selector = format!("{BREAKGLASS}=true");
    let params = WatchParams::default().labels(&selector);
    let mut watch = api.watch(&params, "0").await?.boxed();

    apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    apply(&api, &deployment("api", UNATTESTED, true)?).await?;
    apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    let events = vec![
        seen(&next(&mut watch).await?),
        seen(&next(&mut watch).await?),
    ];

    assert_eq!(events, [pair("ADDED", "api"), pair("DELETED", "api")]);
    Ok(())
}

#[tokio::test]
async fn a_watch_sends_bookmarks_when_asked_and_ends_at_its_timeout() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let stored = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    let params = WatchParams::default().timeout(1);
    let mut watch = api.watch(&params, &version(&stored)).await?.boxed();

    let last = next(&mut watch).await?;
    let after = tokio::time::timeout(Duration::from_secs(5), watch.next()).await?;

    let WatchEvent::Bookmark(bookmark) = last else {
        return Err(format!("expected a BOOKMARK at the timeout, got {last:?}").into());
    };
    assert_eq!(bookmark.metadata.resource_version, version(&stored));
    assert!(after.is_none(), "the watch ends at timeoutSeconds");
    Ok(())
}

#[tokio::test]
async fn a_watch_streams_newline_delimited_json_in_chunks_and_refuses_bad_parameters() -> TestResult
{
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    let http = reqwest::Client::new();
    let url = format!("{}/apis/apps/v1/namespaces/prod/deployments", sim.url);

    let mut refused = Vec::new();
    for query in [
        "watch=true&resourceVersion=abc",
        "watch=1&timeoutSeconds=-1",
        "watch=true&labelSelector=a%20in",
    ] {
        let response = http.get(format!("{url}?{query}")).send().await?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await?;
        refused.push((status, body["reason"].clone()));
    }
    let response = http
        .get(format!("{url}?watch=1&resourceVersion=0&timeoutSeconds=1"))
        .send()
        .await?;
    let chunked = response
        .headers()
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await?;

    for (status, reason) in refused {
        assert_eq!((status, reason), (400, json!("BadRequest")));
    }
    assert_eq!(chunked.as_deref(), Some("chunked"));
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{body}");
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["metadata"]["name"], "api");
    assert_eq!(lines[0]["object"]["kind"], "Deployment");
    Ok(())
}
