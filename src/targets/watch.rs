//! How the detector follows a Kubernetes cluster: one kube-runtime watcher per kind it lists
//! ([`super::scan::KINDS`]), across the cluster, or in each of the target's namespaces where
//! the broker may not list cluster-wide, feeding a [`Picture`].
//!
//! A watcher lists once, then watches from the list's resource version. A watch that breaks
//! resumes from the last version it saw (with kube-runtime's backoff); one the server answers
//! 410 Expired (that version is no longer kept) lists again, which the picture takes as a new
//! list. A part whose watch failed counts as incomplete until it has listed again. Every
//! `backstop` each watcher is started afresh, so its kind is listed in full again: a backstop
//! for anything a watch could have missed.

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher as watch_stream};
use serde_json::{Value, json};

use super::kubernetes::classify;
use super::picture::{Part, Picture};
use super::scan::KINDS;
use super::{KubernetesTarget, TargetError};

impl KubernetesTarget {
    /// Keeps `picture` up to date with every object [`KubernetesTarget::scan_workloads`]
    /// would list; runs until dropped.
    pub async fn watch_workloads(
        &self,
        namespaces: &[String],
        picture: &Picture,
        backstop: Duration,
    ) {
        let kinds = KINDS.iter().map(|&(group, version, kind, plural)| {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            );
            self.watch_kind(resource, kind, namespaces, picture, backstop)
        });
        futures_util::future::join_all(kinds).await;
    }

    /// Watches one kind across the cluster; where that is refused, in each namespace for one
    /// backstop interval, then tries across the cluster again.
    async fn watch_kind(
        &self,
        resource: ApiResource,
        kind: &'static str,
        namespaces: &[String],
        picture: &Picture,
        backstop: Duration,
    ) {
        loop {
            picture.expect(kind, None);
            let everywhere = Api::all_with(self.client().clone(), &resource);
            let part = Part {
                kind,
                namespace: None,
            };
            if let Ended::Refused(message) =
                follow(everywhere, &resource, &part, picture, backstop, true).await
            {
                tracing::info!(
                    kind, reason = %message,
                    "may not list across the cluster; watching the target's namespaces"
                );
                picture.expect(kind, Some(namespaces));
                let each = namespaces.iter().map(|namespace| {
                    let api = Api::namespaced_with(self.client().clone(), namespace, &resource);
                    let part = Part {
                        kind,
                        namespace: Some(namespace.clone()),
                    };
                    let resource = &resource;
                    async move { follow(api, resource, &part, picture, backstop, false).await }
                });
                futures_util::future::join_all(each).await;
                if namespaces.is_empty() {
                    // Nothing this kind may be read in: ask across the cluster again later.
                    tokio::time::sleep(backstop).await;
                }
            }
        }
    }
}

/// Why [`follow`] returned.
enum Ended {
    /// The backstop interval passed: start a fresh watcher, which lists in full.
    Backstop,
    /// The first list was refused (no `list` across the cluster).
    Refused(String),
}

/// Feeds one part of the picture from one watcher, with kube-runtime's backoff between
/// failed attempts, until the backstop interval has passed.
async fn follow(
    api: Api<DynamicObject>,
    resource: &ApiResource,
    part: &Part,
    picture: &Picture,
    backstop: Duration,
    may_refuse: bool,
) -> Ended {
    let stream = watch_stream(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let until = tokio::time::sleep(backstop);
    let mut until = std::pin::pin!(until);
    let mut listed = false;
    loop {
        let event = tokio::select! {
            () = &mut until => return Ended::Backstop,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(event)) => {
                listed |= matches!(event, Event::InitDone);
                picture.record(part, to_values(event, resource));
            }
            Some(Err(error)) => {
                // Whatever failed, the part may have missed changes until it lists again.
                picture.unsure(part);
                match error {
                    watcher::Error::InitialListFailed(error) => match classify(error) {
                        TargetError::Refused(message) if may_refuse && !listed => {
                            return Ended::Refused(message);
                        }
                        error => tracing::warn!(%part, %error, "cannot list; trying again"),
                    },
                    watcher::Error::WatchError(status) if status.code == 410 => tracing::info!(
                        %part, "the watch fell too far behind (410 Expired); listing again"
                    ),
                    error => tracing::warn!(%part, %error, "the watch failed; resuming it"),
                }
            }
            // A watcher's stream does not end; were it to, a fresh one lists again.
            None => return Ended::Backstop,
        }
    }
}

/// The event with its object as JSON, `apiVersion` and `kind` set (a list's items carry
/// neither), as the rules read objects.
fn to_values(event: Event<DynamicObject>, resource: &ApiResource) -> Event<Value> {
    let value = |object: DynamicObject| {
        let mut value = serde_json::to_value(&object).unwrap_or_else(|e| {
            tracing::warn!(kind = %resource.kind, error = %e, "an object could not be read whole");
            json!({ "metadata": { "uid": object.metadata.uid, "name": object.metadata.name } })
        });
        value["apiVersion"] = Value::String(resource.api_version.clone());
        value["kind"] = Value::String(resource.kind.clone());
        value
    };
    match event {
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(value(object)),
        Event::InitDone => Event::InitDone,
        Event::Apply(object) => Event::Apply(value(object)),
        Event::Delete(object) => Event::Delete(value(object)),
    }
}
