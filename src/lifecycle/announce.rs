//! What a change announces: for each configured endpoint that wants the event, an outbox row
//! written in the change's own transaction, beside the audit event it announces. A change
//! that rolls back announces nothing; one that commits is never lost (the notifier delivers
//! it, after a crash too). The body is fixed here, so every try sends the same message.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::{Millis, rfc3339};
use crate::config::{Config, NotificationConfig};
use crate::domain::notice::EventType;
use crate::domain::person::Names;
use crate::domain::policy::images;
use crate::domain::{ApprovalRule, AuditAction, State};
use crate::store::{
    END_MOVED, Journaled, Named, NewMessage, REQUEST_ENDED_FIRST, Request, Store, StoreError, Tx,
};

/// The endpoints and what the messages need to say; shared by every change.
pub struct Announcer {
    endpoints: Vec<NotificationConfig>,
    public_url: String,
    rules: HashMap<String, Vec<ApprovalRule>>,
}

impl Announcer {
    /// None when no endpoint is configured: then changes announce nothing.
    pub fn of(config: &Config) -> Option<Arc<Announcer>> {
        if config.notifications.is_empty() {
            return None;
        }
        Some(Arc::new(Announcer {
            endpoints: config.notifications.clone(),
            public_url: config.public_url.as_str().trim_end_matches('/').to_owned(),
            rules: config
                .targets
                .iter()
                .map(|t| (t.name.clone(), t.approvals.clone()))
                .collect(),
        }))
    }

    /// Writes the messages `event` announces, in the change's transaction.
    pub(super) async fn announce(
        &self,
        tx: &mut Tx,
        event: &Journaled,
        action: AuditAction,
        detail: &Value,
    ) -> Result<(), StoreError> {
        let kind = EventType::of(action);
        // An apply plans the reminder before the end; a granted extension moves the end, and
        // the reminder with it.
        let plans_reminder = matches!(action, AuditAction::Applied | AuditAction::Extended);
        let (Some(request_id), Some(target)) =
            (event.request_id.as_deref(), event.target.as_deref())
        else {
            return Ok(());
        };
        if kind.is_none() && !plans_reminder {
            return Ok(());
        }
        if matches!(
            kind,
            Some(EventType::Ended | EventType::Failed | EventType::NeedsAttention)
        ) {
            Store::drop_reminders(tx, request_id, event.at, REQUEST_ENDED_FIRST).await?;
        }
        if action == AuditAction::Extended {
            Store::drop_reminders(tx, request_id, event.at, END_MOVED).await?;
        }
        let now_wanted: Vec<&NotificationConfig> = match kind {
            Some(kind) => self
                .endpoints
                .iter()
                .filter(|e| e.wants(kind, target))
                .collect(),
            None => Vec::new(),
        };
        let reminded: Vec<&NotificationConfig> = if plans_reminder {
            self.endpoints
                .iter()
                .filter(|e| e.wants(EventType::Expiring, target))
                .collect()
        } else {
            Vec::new()
        };
        if now_wanted.is_empty() && reminded.is_empty() {
            return Ok(());
        }
        let Some(request) = Store::request_in(tx, request_id).await? else {
            return Ok(());
        };
        let approvals = Store::approvals_in(tx, request_id).await?;
        let named = Named::of(&request, &approvals);
        // The one who acted, told apart from the request's other people as the pages do.
        let actor = Names::new(
            std::iter::once((
                request.requester_name.as_str(),
                request.requester_subject.as_str(),
            ))
            .chain(
                approvals
                    .iter()
                    .map(|a| (a.approver_name.as_str(), a.approver_subject.as_str())),
            )
            .chain(std::iter::once((event.actor.as_str(), event.subject()))),
        )
        .show(&event.actor, event.subject());
        let said = Said {
            event,
            action,
            request: &request,
            named: &named,
            actor: &actor,
            detail,
        };
        if let Some(kind) = kind {
            let text = self.body(kind, &said).to_string();
            for endpoint in now_wanted {
                self.write(tx, endpoint, kind, event, &text, event.at)
                    .await?;
            }
        }
        if let Some(expires_at) = request
            .expires_at
            .filter(|_| request.state == State::Active)
        {
            let body = self.body(EventType::Expiring, &said);
            let text = body.to_string();
            for endpoint in reminded {
                let remind = i64::try_from(endpoint.remind_before.as_millis()).unwrap_or(0);
                // At least a millisecond after the event that planned it, so that it is
                // delivered after that event's own message, never beside it.
                let due = (expires_at - remind).max(event.at + 1);
                self.write(tx, endpoint, EventType::Expiring, event, &text, due)
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes what a detector's first sighting announces (`breakglass.unbrokered`), in the
    /// finding's transaction: where, what, who wrote it, and the alerts page.
    pub async fn announce_finding(&self, tx: &mut Tx, event: &Journaled) -> Result<(), StoreError> {
        let target = event.target.as_deref().unwrap_or_default();
        let wanted: Vec<&NotificationConfig> = self
            .endpoints
            .iter()
            .filter(|e| e.wants(EventType::Unbrokered, target))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let d = &event.detail;
        let body = json!({
            "type": EventType::Unbrokered.as_str(),
            "timestamp": rfc3339(event.at),
            "data": {
                "finding": d["finding"],
                "target": target,
                "namespace": event.namespace,
                "kind": d["kind"],
                "name": d["name"],
                "uid": d["uid"],
                "images": d["images"],
                "writers": d["writers"],
                "reasons": d["reasons"],
                "url": format!("{}/alerts", self.public_url),
            },
        })
        .to_string();
        for endpoint in wanted {
            self.write(tx, endpoint, EventType::Unbrokered, event, &body, event.at)
                .await?;
        }
        Ok(())
    }

    async fn write(
        &self,
        tx: &mut Tx,
        endpoint: &NotificationConfig,
        kind: EventType,
        event: &Journaled,
        body: &str,
        due_at: Millis,
    ) -> Result<(), StoreError> {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        Store::insert_message(
            tx,
            &NewMessage {
                id: &id,
                endpoint: &endpoint.name,
                event_type: kind.as_str(),
                seq: event.entry,
                request_id: event.request_id.as_deref(),
                body,
                // A reminder's day of tries starts when it is due.
                created_at: due_at,
                due_at,
                destination: &endpoint.destination(),
            },
        )
        .await
    }

    /// The Standard Webhooks body `{type, timestamp, data}`: the request as it stands after
    /// the change, people as the pages name them, and never a manifest or a secret.
    fn body(&self, kind: EventType, said: &Said<'_>) -> Value {
        let Said {
            event,
            action,
            request,
            named,
            actor,
            detail,
        } = *said;
        let rules = self.rules.get(&request.target).cloned().unwrap_or_default();
        let needed: u32 = rules.iter().map(|r| r.count).sum();
        let rule = crate::domain::approval::describe(&rules);
        let images: Vec<String> = request
            .objects()
            .unwrap_or_default()
            .iter()
            .flat_map(images)
            .collect();
        let time = |at: Option<Millis>| at.map(rfc3339);
        let mut data = json!({
            "request": request.id,
            "state": request.state.as_str(),
            "target": request.target,
            "namespace": request.namespace,
            "ticket": request.ticket,
            "requester": named.requester,
            "approvers": named.approvers,
            "actor": actor,
            "images": images,
            "approval_rule": rule,
            "approvals": {"count": named.approvers.len(), "needed": needed},
            "times": {
                "created_at": rfc3339(request.created_at),
                "decide_by": rfc3339(request.decide_by),
                "applied_at": time(request.applied_at),
                "expires_at": time(request.expires_at),
                "ended_at": time(request.ended_at),
            },
            "url": format!("{}/requests/{}", self.public_url, request.id),
        });
        if kind == EventType::Created {
            data["justification"] = json!(request.justification);
            data["minutes"] = json!(request.duration_seconds / 60);
            // An extension says which breakglass it extends; its minutes are the time added.
            if let Some(original) = &request.extends {
                data["extends"] = json!(original);
            }
        }
        if let Some(outcome) = outcome(kind, action, detail, request.extends.is_some()) {
            data["outcome"] = json!(outcome);
        }
        json!({
            "type": kind.as_str(),
            "timestamp": rfc3339(event.at),
            "data": data,
        })
    }
}

/// What a message is made of.
#[derive(Clone, Copy)]
struct Said<'a> {
    event: &'a Journaled,
    action: AuditAction,
    request: &'a Request,
    named: &'a Named,
    actor: &'a str,
    detail: &'a Value,
}

/// What an end, a failure or a call for attention came to, in a sentence.
fn outcome(
    kind: EventType,
    action: AuditAction,
    detail: &Value,
    extension: bool,
) -> Option<String> {
    let error = detail["error"].as_str();
    let unchanged = if extension {
        "nothing was applied; the breakglass it would extend ends as planned"
    } else {
        "nothing was applied"
    };
    match (kind, action) {
        (EventType::Ended, AuditAction::Cancelled) => Some(format!(
            "withdrawn by the requester before it was decided; {unchanged}"
        )),
        (EventType::Ended, AuditAction::Lapsed) => Some(format!(
            "lapsed: nobody decided before the approval window closed; {unchanged}"
        )),
        (EventType::Ended, _) => Some(match error {
            None => {
                let objects = detail["objects"].as_array().map_or(0, Vec::len);
                format!("undone: {objects} object(s) restored or removed")
            }
            Some(e) => format!("undo failed: {e}"),
        }),
        (EventType::Failed | EventType::NeedsAttention, _) => {
            Some(error.unwrap_or("see the request page").to_owned())
        }
        _ => None,
    }
}
