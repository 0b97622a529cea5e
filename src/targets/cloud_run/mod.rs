//! Cloud Run services through the Admin API v2, with the broker's own Google identity.
//!
//! Apply reads the service, lays the approved template, the broker's stamps and the
//! breakglass justification over it, and PATCHes it at the etag the broker recorded; then it
//! waits for the operation and for the new revision to be ready and serving. Restore and
//! delete are made at the etag the end just read. Objects are in the request shape of
//! [`crate::domain::cloud_run`]; only this module and [`shape`] know the wire shape.

mod client;
pub mod shape;

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderValue;
use serde_json::Value;

use super::{Expect, ObjectRef, Target, TargetError, Written};
use client::Client;

/// The root of Google's Cloud Run Admin API.
pub const DEFAULT_API: &str = "https://run.googleapis.com";

/// Where the Cloud Run client's bearer tokens come from: the broker's Google identity
/// ([`crate::google::GoogleAuth`]), or anything else that hands out a token.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// An `Authorization` header value, marked sensitive.
    async fn bearer(&self) -> Result<HeaderValue, TargetError>;
}

/// The broker's own Google identity, in production and against the simulated metadata server.
#[async_trait]
impl TokenSource for crate::google::GoogleAuth {
    async fn bearer(&self) -> Result<HeaderValue, TargetError> {
        crate::google::GoogleAuth::bearer(self).await
    }
}

pub struct CloudRunTarget {
    client: Client,
}

impl CloudRunTarget {
    pub fn new(api: &str, project: &str, region: &str, tokens: Arc<dyn TokenSource>) -> Self {
        CloudRunTarget {
            client: Client::new(api, project, region, tokens),
        }
    }
}

fn written(service: &Value) -> Written {
    Written::of(&shape::from_api(service))
}

#[async_trait]
impl Target for CloudRunTarget {
    /// Services as the Admin API shows them (not in the request shape): the detector reads
    /// their justification, creator and last modifier.
    async fn scan(&self, _namespaces: &[String]) -> Result<Option<Vec<Value>>, TargetError> {
        self.client.list().await.map(Some)
    }

    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, TargetError> {
        Ok(self
            .client
            .get(&object.name)
            .await?
            .map(|s| shape::from_api(&s)))
    }

    async fn apply(
        &self,
        object: &ObjectRef,
        body: &Value,
        expect: Expect<'_>,
    ) -> Result<Written, TargetError> {
        let id = &object.name;
        let operation = match expect {
            Expect::Absent => self.client.create(id, shape::to_api(body), false).await?,
            Expect::Version(etag) => {
                // Never a write over what the broker did not record: the etag must still be
                // the recorded one now, and the PATCH carries it as a precondition too.
                let live =
                    self.client.get(id).await?.ok_or_else(|| {
                        TargetError::Conflict(format!("service {id} was deleted"))
                    })?;
                if live["etag"].as_str() != Some(etag) {
                    return Err(TargetError::Conflict(format!(
                        "service {id} is at etag {}, not {etag}",
                        live["etag"]
                    )));
                }
                let requested = shape::to_api(body);
                let (before, after) = (
                    shape::secrets(live.get("template")),
                    shape::secrets(requested.get("template")),
                );
                if before != after {
                    return Err(TargetError::Refused(format!(
                        "service {id}: the request would change the secrets the service reads ({} now, {} asked); a breakglass may not",
                        show(&before),
                        show(&after)
                    )));
                }
                let merged = shape::merged(&live, requested);
                self.client.patch(id, merged, etag, false).await?
            }
        };
        self.client.finish(operation).await?;
        Ok(written(&self.client.serving(id).await?))
    }

    async fn dry_run(&self, object: &ObjectRef, body: &Value) -> Result<(), TargetError> {
        let id = &object.name;
        let operation = match self.client.get(id).await? {
            None => self.client.create(id, shape::to_api(body), true).await?,
            Some(live) => {
                let etag = live["etag"].as_str().unwrap_or_default().to_owned();
                let merged = shape::merged(&live, shape::to_api(body));
                self.client.patch(id, merged, &etag, true).await?
            }
        };
        self.client.finish(operation).await
    }

    async fn restore(
        &self,
        object: &ObjectRef,
        body: &Value,
        version: &str,
    ) -> Result<(), TargetError> {
        let id = &object.name;
        let operation = self
            .client
            .patch(id, shape::to_api(body), version, false)
            .await?;
        self.client.finish(operation).await?;
        self.client.serving(id).await.map(|_| ())
    }

    async fn withdraw_breakglass(
        &self,
        object: &ObjectRef,
        version: &str,
    ) -> Result<Withdrawal, TargetError> {
        self.withdraw(&object.name, version).await
    }

    async fn delete(&self, object: &ObjectRef, version: Option<&str>) -> Result<(), TargetError> {
        match self.client.delete(&object.name, version).await {
            Ok(operation) => self.client.finish(operation).await,
            Err(TargetError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// How an unbrokered breakglass was taken off a Cloud Run service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// All traffic went back to this revision (short name), the newest admitted without
    /// breakglass, and the justification came off the service.
    Rerouted { revision: String },
    /// No revision was admitted without breakglass: the service was deleted.
    Deleted,
}

impl CloudRunTarget {
    /// Takes an unbrokered breakglass off service `id` while it is still at `etag`: all its
    /// traffic to the newest revision admitted without breakglass, or, when there is none,
    /// the service deleted. A service changed since is left alone (a conflict).
    pub async fn withdraw(&self, id: &str, etag: &str) -> Result<Withdrawal, TargetError> {
        let live = self.client.get(id).await?.ok_or(TargetError::NotFound)?;
        if live["etag"].as_str() != Some(etag) {
            return Err(TargetError::Conflict(format!(
                "service {id} is at etag {}, not {etag}",
                live["etag"]
            )));
        }
        let revisions = self.client.revisions(id).await?;
        match shape::last_admitted_without_breakglass(&revisions) {
            Some(revision) => {
                let body = shape::rerouted(&live, &revision);
                let operation = self.client.patch(id, body, etag, false).await?;
                self.client.finish(operation).await?;
                Ok(Withdrawal::Rerouted { revision })
            }
            None => {
                let operation = self.client.delete(id, Some(etag)).await?;
                self.client.finish(operation).await?;
                Ok(Withdrawal::Deleted)
            }
        }
    }
}

fn show(secrets: &[String]) -> String {
    if secrets.is_empty() {
        "none".into()
    } else {
        secrets.join("; ")
    }
}
