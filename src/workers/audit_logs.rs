//! The second witness: on GKE targets with `audit_logs = true`, the cluster's Cloud Audit
//! Logs, read through the Logging API every [`POLL`] with the breakglass query
//! ([`breakglass_query`]), so that a breakglass admission whose workload was deleted before
//! the detector could list it is still a finding.
//!
//! Each logged write (the object as stored, with its UID) is judged by the detector's rule
//! ([`judge`]): its controller chain is followed on the target, one GET per owner (and, for an
//! owner that is gone, through the writes of the same read), and a chain that ends at a
//! workload the broker applied, under a request that was live when the write was made, is the
//! broker's. An owner that cannot be found is a finding under that owner (fail closed). A
//! finding has the key the detector would give the same object, so one object makes one
//! finding whichever witness saw it first. The log reports an object only if it has never had
//! a finding: an entry's time is Google's and an episode's end the broker's, so the log cannot
//! tell which episode of an object a write belongs to, and an object that had one is the
//! detector's to follow (what it misses: the same object labelled again after its finding
//! ended, and deleted before the detector listed it).
//!
//! How far each target's log has been read is kept in the database ([`Store::audit_log_cursor`]),
//! in Google's time (the entries' timestamps): a restart reads on from there. Entries may
//! reach the log a little after their timestamp, so every read goes back [`LATE`] before the
//! newest entry it has judged; the first read goes back [`LOOKBACK`]. Reading an entry again,
//! in this process, another replica or after a restart, adds nothing. The reader only
//! alerts; removing is the detector's, which sees what is still there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::detect::announce;
use crate::clock::{Clock, Millis, rfc3339};
use crate::domain::unbrokered::{
    Found, LoggedWrite, judge, live_when_written, owner_of, stamped_requests,
};
use crate::store::{Finding, Store};
use crate::targets::audit_logs::{LoggingApi, breakglass_query};
use crate::targets::{ObjectRef, Registry, TargetEntry, TargetError};

/// How often each target's log is read.
pub const POLL: Duration = Duration::from_secs(5);
/// How far back the first read of a target's log goes.
pub const LOOKBACK: Duration = Duration::from_secs(3600);
/// How late an entry may reach the log after its timestamp and still be read.
pub const LATE: Duration = Duration::from_secs(120);
/// Pages one read takes at most; a longer backlog is read on at the next.
const MAX_PAGES: usize = 50;
/// How far up a controller chain is followed (real ones are at most three long).
const MAX_CHAIN: usize = 8;

fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

pub struct AuditLogReader {
    store: Store,
    clock: Clock,
    targets: Registry,
    /// Per target with `audit_logs = true`: its Logging API.
    apis: HashMap<String, LoggingApi>,
    announcer: Option<Arc<crate::lifecycle::Announcer>>,
    notifier: Option<Arc<super::notify::Notifier>>,
    /// Entries this process has judged, by target and insertId, with their timestamps: a read
    /// goes back over recent entries, and need not follow their chains again.
    judged: Mutex<HashMap<(String, String), Millis>>,
}

/// What one read of a target's log did.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Writes the query returned.
    pub entries: usize,
    /// Of those, the ones judged in this read (not by this process before).
    pub judged: usize,
    /// Judged the broker's own.
    pub brokered: usize,
    /// Waiting for an apply under way to record its UID; read again next time.
    pub waiting: usize,
    /// Findings this read recorded.
    pub new: Vec<Finding>,
    /// Where the next read starts (less [`LATE`]).
    pub read_to: Millis,
}

enum Outcome {
    /// A finding of someone else's breakglass (recorded now, or already).
    Unbrokered(Option<Box<Finding>>),
    Brokered,
    /// Matched on a mark that admits nothing (the label on a workload, not on its pods).
    NoBreakglass,
    Waiting,
}

impl AuditLogReader {
    pub fn new(
        store: Store,
        clock: Clock,
        targets: Registry,
        announcer: Option<Arc<crate::lifecycle::Announcer>>,
        notifier: Option<Arc<super::notify::Notifier>>,
    ) -> Arc<AuditLogReader> {
        let apis = match targets.google() {
            Some(google) => targets
                .iter()
                .filter(|e| e.config.audit_logs)
                .map(|e| {
                    let api = LoggingApi::new(e.config.logging_api(), google.clone());
                    (e.name().to_owned(), api)
                })
                .collect(),
            None => HashMap::new(),
        };
        Arc::new(AuditLogReader {
            store,
            clock,
            targets,
            apis,
            announcer,
            notifier,
            judged: Mutex::default(),
        })
    }

    /// Whether any target has its audit logs read.
    pub fn has_work(&self) -> bool {
        !self.apis.is_empty()
    }

    /// Reads every target's log, again and again; a failing read is logged and tried again.
    pub async fn run(self: Arc<Self>) {
        while self.has_work() {
            self.sweep().await;
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn sweep(&self) {
        for entry in self.targets.iter().filter(|e| e.config.audit_logs) {
            if let Err(e) = self.read(entry).await {
                tracing::warn!(target_name = %entry.name(), error = %e, "reading Cloud Audit Logs failed; trying again");
            }
        }
    }

    /// Reads the target's log from where the last read left it, and records what the broker
    /// did not make.
    pub async fn read(&self, entry: &TargetEntry) -> anyhow::Result<ReadReport> {
        let name = entry.name();
        let config = &entry.config;
        let Some(api) = self.apis.get(name) else {
            anyhow::bail!("no Google credentials to read {name}'s Cloud Audit Logs with");
        };
        let (Some(project), Some(location), Some(cluster)) =
            (&config.project, &config.location, &config.cluster)
        else {
            anyhow::bail!("audit_logs needs project, location and cluster");
        };
        // Google's time, not the broker's clock: the entries carry Google's timestamps.
        let now = chrono::Utc::now().timestamp_millis();
        let since = match self.store.audit_log_cursor(name).await? {
            Some(cursor) => cursor.min(now - millis(LATE)),
            None => now - millis(LOOKBACK),
        };
        let query = breakglass_query(project, location, cluster, &rfc3339(since));
        let mut entries = Vec::new();
        let mut page_token = None;
        let mut complete = false;
        for _ in 0..MAX_PAGES {
            let (page, next) = api.list(project, &query, page_token.as_deref()).await?;
            entries.extend(page);
            match next {
                Some(token) => page_token = Some(token),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let writes: Vec<LoggedWrite> = entries.iter().filter_map(LoggedWrite::from_entry).collect();
        // Owners that are gone may still be in the log: a controller's writes come with the
        // ones it made.
        let logged: HashMap<&str, &Value> = writes.iter().map(|w| (w.uid(), &w.object)).collect();
        let mut report = ReadReport {
            entries: writes.len(),
            ..ReadReport::default()
        };
        let mut newest = since;
        let mut hold: Option<Millis> = None;
        for write in &writes {
            let key = (name.to_owned(), write.insert_id.clone());
            if self.judged().contains_key(&key) {
                newest = newest.max(write.at);
                continue;
            }
            match self.judge_write(entry, write, &logged).await {
                Ok(outcome) => {
                    report.judged += 1;
                    match outcome {
                        Outcome::Waiting => {
                            report.waiting += 1;
                            hold = Some(hold.map_or(write.at, |h| h.min(write.at)));
                            continue;
                        }
                        Outcome::Brokered => report.brokered += 1,
                        Outcome::NoBreakglass => {}
                        Outcome::Unbrokered(found) => report.new.extend(found.map(|f| *f)),
                    }
                    self.judged().insert(key, write.at);
                    newest = newest.max(write.at);
                }
                Err(e) => {
                    // The target or the database failed: read on from this entry next time.
                    tracing::warn!(target_name = %name, insert_id = %write.insert_id, error = %e, "could not judge a Cloud Audit Log entry; will read it again");
                    hold = Some(hold.map_or(write.at, |h| h.min(write.at)));
                    break;
                }
            }
        }
        // Without a backlog left, everything up to LATE ago that the log will ever show for
        // this window has been read.
        let done_to = if complete {
            newest.max(now - millis(LATE))
        } else {
            newest
        };
        report.read_to = hold.unwrap_or(done_to);
        self.store
            .set_audit_log_cursor(name, report.read_to, self.clock.now())
            .await?;
        let forget_before = report.read_to.min(since) - millis(LATE);
        self.judged()
            .retain(|(target, _), at| target != name || *at >= forget_before);
        Ok(report)
    }

    fn judged(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Millis>> {
        self.judged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Judges one logged write, and records the finding it makes unless one covers it.
    async fn judge_write(
        &self,
        entry: &TargetEntry,
        write: &LoggedWrite,
        logged: &HashMap<&str, &Value>,
    ) -> anyhow::Result<Outcome> {
        if !write.carries_breakglass() {
            return Ok(Outcome::NoBreakglass);
        }
        let found = self.follow(entry, write, logged).await?;
        let chain: Vec<&Value> = std::iter::once(&write.object)
            .chain(found.owners.iter())
            .collect();
        let stamped: Vec<String> =
            stamped_requests(&chain.iter().map(|o| (*o).clone()).collect::<Vec<_>>())
                .into_iter()
                .collect();
        let mut uids: Vec<String> = chain
            .iter()
            .map(|o| o["metadata"]["uid"].as_str().unwrap_or_default().to_owned())
            .collect();
        if let Some(missing) = chain
            .last()
            .and_then(|top| owner_of(top))
            .and_then(|o| o["uid"].as_str())
        {
            uids.push(missing.to_owned());
        }
        let known = self.store.known_applies(&stamped).await?;
        let live_then = self.store.applied_live_at(&uids, write.at).await?;
        let then: Vec<String> = live_then.iter().cloned().collect();
        let approved_then = self.store.approved_images(&then).await?;
        let mut known = live_when_written(known, live_then);
        known.approved_images.extend(approved_then);
        let applying = stamped.iter().any(|id| known.applying.contains(id));
        if applying && !uids.iter().any(|uid| known.live_uids.contains(uid)) {
            // The broker writes before it records the UID; judge it once it has.
            return Ok(Outcome::Waiting);
        }
        let Some(suspect) = judge(write, &found, &known) else {
            return Ok(Outcome::Brokered);
        };
        let name = entry.name();
        if self.store.has_finding(name, &suspect.uid).await? {
            // The detector (or another reader) has reported this object already; what the log
            // shows ran under it joins that finding.
            self.store
                .add_finding_members(name, &suspect.uid, &suspect.members)
                .await?;
            return Ok(Outcome::Unbrokered(None));
        }
        let recorded = self
            .store
            .record_first_sighting(
                name,
                &suspect,
                self.clock.now(),
                announce(self.announcer.clone()),
            )
            .await?;
        let Some((finding, _)) = recorded else {
            return Ok(Outcome::Unbrokered(None));
        };
        if let Some(notifier) = &self.notifier {
            notifier.wake();
        }
        tracing::warn!(
            target_name = %name, namespace = %suspect.namespace, kind = %suspect.kind,
            name = %suspect.name, uid = %suspect.uid, writer = %write.principal,
            insert_id = %write.insert_id, "Cloud Audit Logs show breakglass the broker did not make"
        );
        Ok(Outcome::Unbrokered(Some(Box::new(finding))))
    }

    /// Whether the logged object is still on the target, and its owners as far as they can
    /// be found: on the target (the same UID), else among this read's writes.
    async fn follow(
        &self,
        entry: &TargetEntry,
        write: &LoggedWrite,
        logged: &HashMap<&str, &Value>,
    ) -> Result<Found, TargetError> {
        let namespace = write.namespace();
        let itself = object_ref(&write.object, namespace);
        let gone = self
            .get(entry, &itself)
            .await?
            .is_none_or(|current| current["metadata"]["uid"] != write.uid());
        let mut owners: Vec<Value> = Vec::new();
        let mut seen = HashSet::from([write.uid().to_owned()]);
        while owners.len() < MAX_CHAIN {
            let at = owners.last().unwrap_or(&write.object);
            let Some(reference) = owner_of(at) else {
                break;
            };
            let uid = reference["uid"].as_str().unwrap_or_default().to_owned();
            if !seen.insert(uid.clone()) {
                break;
            }
            let wanted = object_ref(reference, namespace);
            let found = match self.get(entry, &wanted).await? {
                Some(mut current) if current["metadata"]["uid"] == uid.as_str() => {
                    current["apiVersion"] = wanted.api_version.clone().into();
                    current["kind"] = wanted.kind.clone().into();
                    Some(current)
                }
                _ => logged.get(uid.as_str()).map(|o| (*o).clone()),
            };
            match found {
                Some(owner) => owners.push(owner),
                None => break,
            }
        }
        Ok(Found { owners, gone })
    }

    /// The object as it stands; one the broker may not read counts as not found (and so a
    /// chain cut there is a finding), an unreachable target is an error to retry.
    async fn get(
        &self,
        entry: &TargetEntry,
        object: &ObjectRef,
    ) -> Result<Option<Value>, TargetError> {
        match entry.client.get(object).await {
            Ok(found) => Ok(found),
            Err(e) if e.is_transient() => Err(e),
            Err(_) => Ok(None),
        }
    }
}

/// An object (or an owner reference: `apiVersion`, `kind`, `name`) in `namespace`.
fn object_ref(object: &Value, namespace: &str) -> ObjectRef {
    let field = |name: &str| -> String {
        object[name]
            .as_str()
            .or_else(|| object["metadata"][name].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    ObjectRef {
        api_version: field("apiVersion"),
        kind: field("kind"),
        namespace: namespace.to_owned(),
        name: field("name"),
    }
}
