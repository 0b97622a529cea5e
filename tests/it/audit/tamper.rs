//! Tampering with the history directly in the database, on SQLite and on PostgreSQL, and
//! `breakglass-broker audit verify` (the real binary) naming the first bad event each time.

use std::path::Path;
use std::sync::{Arc, Mutex};

use breakglass_broker::audit::export::{self, Format};
use breakglass_broker::audit::{log_checkpoint, log_event};
use breakglass_broker::domain::AuditAction;
use breakglass_broker::domain::digest::canonical_json;
use breakglass_broker::logging::CloudLogging;
use breakglass_broker::store::{AuditEvent, AuditFilter, NewEvent, RANGE_ROWS, Store};
use serde_json::json;
use sqlx::Row;
use tempfile::TempDir;

use crate::store::FreshPostgres;

const BIN: &str = env!("CARGO_BIN_EXE_breakglass-broker");
const NOW: i64 = 1_700_000_000_000;
/// Events every test starts from.
const EVENTS: i64 = 12;

/// A database of its own, reached by URL (for the binary) and through a store (for the test).
pub struct Db {
    pub url: String,
    pub store: Store,
    _dir: Option<TempDir>,
    _postgres: Option<FreshPostgres>,
}

impl Db {
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("broker.db");
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("sqlite store");
        Db {
            url: format!("sqlite://{}", path.display()),
            store,
            _dir: Some(dir),
            _postgres: None,
        }
    }

    pub async fn postgres() -> Db {
        let database = FreshPostgres::create().await;
        let store = Store::connect(&database.url).await.expect("postgres store");
        Db {
            url: database.url.clone(),
            store,
            _dir: None,
            _postgres: Some(database),
        }
    }

    async fn exec(&self, sql: &'static str) {
        sqlx::query(sql)
            .execute(self.store.pool())
            .await
            .expect("tampering statement runs");
    }
}

/// The outcome of running `audit verify`.
pub struct Verdict {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `breakglass-broker audit verify` on the database, with a checkpoints file if given.
pub async fn verify(url: &str, checkpoints: Option<&Path>) -> Verdict {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["audit", "verify", "--database-url", url])
        .env_remove("DATABASE_URL");
    if let Some(path) = checkpoints {
        command.arg("--checkpoints").arg(path);
    }
    let output = command.output().await.expect("the binary runs");
    Verdict {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts the verdict is "broken", naming `seq` first, with `words` in the explanation.
fn assert_broken_at(verdict: &Verdict, seq: i64, words: &str) {
    assert_eq!(verdict.code, 1, "exit code; stderr: {}", verdict.stderr);
    assert!(
        verdict
            .stderr
            .contains(&format!("audit chain broken at seq {seq}:")),
        "names seq {seq}: {}",
        verdict.stderr
    );
    assert!(verdict.stderr.contains(words), "{}", verdict.stderr);
}

/// Appends `EVENTS` events, each in its own transaction as the broker writes them, and
/// returns them as the chain holds them.
async fn populate(store: &Store) -> Vec<AuditEvent> {
    for i in 1..=EVENTS {
        let mut tx = store.begin().await.expect("begin");
        let actor = ["alice", "bob", "carol"][(i % 3) as usize];
        Store::append_audit(
            &mut tx,
            NewEvent {
                at: NOW + i * 1000,
                actor,
                person: None,
                action: AuditAction::Approved,
                request_id: Some("r-1"),
                ticket: Some("INC-1"),
                target: Some("dev-cluster"),
                namespace: Some("prod"),
                detail: json!({ "n": i, "comment": "looks right, \"ship it\"\nnext line é" }),
            },
        )
        .await
        .expect("append");
        tx.commit().await.expect("commit");
    }
    let mut written = store
        .audit_events(&AuditFilter::default())
        .await
        .expect("events");
    written.sort_by_key(|e| e.seq);
    assert_eq!(
        written.len(),
        EVENTS as usize,
        "every event is in the chain"
    );
    written
}

/// What `f` writes to the structured log, in the broker's JSON format.
fn log_lines(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(CloudLogging)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

/// Writes a checkpoints file: unrelated log lines, then the given lines.
fn checkpoints_file(dir: &TempDir, lines: &str) -> std::path::PathBuf {
    let path = dir.path().join("broker.log");
    let noise =
        "{\"severity\":\"INFO\",\"message\":\"breakglass-broker serving\"}\nnot JSON at all\n";
    std::fs::write(&path, format!("{noise}{lines}")).expect("write checkpoints");
    path
}

/// Rewrites the chain from `from` on as a careful attacker would: `from`'s actor changed,
/// every hash after it recomputed, the head record too.
pub(super) async fn rewrite_from(store: &Store, from: i64) {
    let events = store
        .audit_events(&AuditFilter {
            after_seq: Some(from - 1),
            oldest_first: true,
            limit: 10_000,
            ..AuditFilter::default()
        })
        .await
        .expect("read");
    let mut prev: Option<String> = None;
    for mut event in events {
        if let Some(prev) = prev {
            event.prev_hash = prev;
        }
        if event.seq == from {
            event.actor = "mallory".into();
        }
        event.hash = event.expected_hash();
        sqlx::query("UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&event.actor)
            .bind(&event.prev_hash)
            .bind(&event.hash)
            .bind(event.seq)
            .execute(store.pool())
            .await
            .expect("rewrite");
        prev = Some(event.hash);
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(prev.expect("events were rewritten"))
        .execute(store.pool())
        .await
        .expect("head");
}

/// Each test below, once per database, as `audit::tamper::sqlite::NAME` and
/// `audit::tamper::postgres::NAME`.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::Db::sqlite().await;
                    super::$test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::Db::postgres().await;
                    super::$test(&db).await;
                    db.store.pool().close().await;
                }
            )*
        }
    };
}

on_both_databases!(
    an_untouched_history_verifies_with_its_count_and_head,
    an_edited_event_is_named,
    an_edited_event_with_a_recomputed_hash_is_named,
    an_event_whose_detail_is_no_longer_json_is_named,
    a_deleted_event_is_named,
    a_deleted_last_event_is_named,
    reordered_events_are_named_at_the_first_place_they_swapped,
    a_consistent_rewrite_passes_alone_but_not_against_the_logged_checkpoints,
    a_truncated_history_with_its_head_moved_back_fails_against_a_checkpoint,
    replicas_appending_at_once_never_fork_the_chain,
    tampering_where_the_readers_ranges_meet_is_named_at_its_place,
    an_export_read_in_ranges_is_byte_for_byte_the_export_read_as_one_stream,
    an_event_added_past_the_head_is_named,
);

/// Events in a long history: the verification and the export read it in ranges of
/// `RANGE_ROWS` on two connections, so this spans several ranges of each.
const LONG: i64 = 4 * RANGE_ROWS + 10;

/// Appends `LONG` events in bulk: some with a person, some with no request or target, details
/// of several shapes.
async fn populate_long(store: &Store) {
    let events: Vec<NewEvent<'_>> = (1..=LONG)
        .map(|i| NewEvent {
            at: NOW + i * 1000,
            actor: ["alice", "=bob", "carol, \"c\""][(i % 3) as usize],
            person: (i % 4 == 0).then_some(("https://issuer.example", "subject-1")),
            action: AuditAction::Approved,
            request_id: (i % 5 != 0).then_some("r-1"),
            ticket: Some("INC-1"),
            target: (i % 7 != 0).then_some("dev-cluster"),
            namespace: Some("prod"),
            detail: match i % 3 {
                0 => json!({ "n": i, "comment": "line\nbreak é", "ratio": 0.5 }),
                1 => json!({ "z": [i, -i, null, true], "a": { "nested": "x" } }),
                _ => json!({}),
            },
        })
        .collect();
    let mut tx = store.begin().await.expect("begin");
    Store::append_audit_many(&mut tx, &events)
        .await
        .expect("append");
    tx.commit().await.expect("commit");
}

/// A stored event's hash and actor, to put back after tampering with it.
async fn hash_and_actor(db: &Db, seq: i64) -> (String, String) {
    let row = sqlx::query("SELECT hash, actor FROM audit_events WHERE seq = $1")
        .bind(seq)
        .fetch_one(db.store.pool())
        .await
        .expect("event");
    (row.get("hash"), row.get("actor"))
}

async fn set_actor_and_hash(db: &Db, seq: i64, actor: &str, hash: &str) {
    sqlx::query("UPDATE audit_events SET actor = $1, hash = $2 WHERE seq = $3")
        .bind(actor)
        .bind(hash)
        .bind(seq)
        .execute(db.store.pool())
        .await
        .expect("tamper");
}

async fn tampering_where_the_readers_ranges_meet_is_named_at_its_place(db: &Db) {
    populate_long(&db.store).await;
    let verdict = verify(&db.url, None).await;
    assert_eq!(verdict.code, 0, "{}", verdict.stderr);
    assert!(
        verdict.stdout.starts_with(&format!(
            "audit chain intact: {LONG} events verified through seq {LONG},"
        )),
        "{}",
        verdict.stdout
    );

    // The first event of the second range, which the second reader reads.
    let first_of_second = RANGE_ROWS + 1;
    let (hash, actor) = hash_and_actor(db, first_of_second).await;
    set_actor_and_hash(db, first_of_second, "mallory", &hash).await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(
        &verdict,
        first_of_second,
        &format!("event {first_of_second} was edited"),
    );
    set_actor_and_hash(db, first_of_second, &actor, &hash).await;

    // The last event of the first range, edited and its hash recomputed: only the first
    // event of the next range, read by the other reader, still names its old hash.
    let last_of_first = RANGE_ROWS;
    let (hash, actor) = hash_and_actor(db, last_of_first).await;
    let mut event = db
        .store
        .audit_events(&AuditFilter {
            after_seq: Some(last_of_first - 1),
            before_seq: Some(last_of_first + 1),
            ..AuditFilter::default()
        })
        .await
        .expect("read")
        .remove(0);
    event.actor = "mallory".into();
    set_actor_and_hash(db, last_of_first, "mallory", &event.expected_hash()).await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(
        &verdict,
        last_of_first,
        &format!("event {last_of_first} was rewritten"),
    );
    set_actor_and_hash(db, last_of_first, &actor, &hash).await;

    // Two edits, the later one in a range the first reader reads and the earlier one in a
    // range the second reader reads: the earlier is named, whichever reader gets there first.
    let (earlier, later) = (RANGE_ROWS + 40, 2 * RANGE_ROWS + 40);
    let mut originals = Vec::new();
    for seq in [later, earlier] {
        let (hash, actor) = hash_and_actor(db, seq).await;
        set_actor_and_hash(db, seq, "mallory", &hash).await;
        originals.push((seq, actor, hash));
    }
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, earlier, &format!("event {earlier} was edited"));
    for (seq, actor, hash) in originals {
        set_actor_and_hash(db, seq, &actor, &hash).await;
    }

    // Events deleted across the end of the third range and the start of the fourth.
    let (from, to) = (3 * RANGE_ROWS, 3 * RANGE_ROWS + 1);
    sqlx::query("DELETE FROM audit_events WHERE seq >= $1 AND seq <= $2")
        .bind(from)
        .bind(to)
        .execute(db.store.pool())
        .await
        .expect("delete");
    let verdict = verify(&db.url, None).await;
    assert_broken_at(
        &verdict,
        from,
        &format!("events {from} to {to} were deleted"),
    );
}

/// Everything the export writes for `filter`, or the error it ended with.
async fn exported(db: &Db, filter: &AuditFilter, format: Format) -> Result<String, String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let export = async move {
        // The channel closes when the export is done with it.
        export::export(&db.store, filter, format, &tx).await
    };
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk.expect("no error chunk"));
        }
        out
    };
    let (result, out) = tokio::join!(export, collect);
    result.map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out).expect("UTF-8"))
}

async fn an_export_read_in_ranges_is_byte_for_byte_the_export_read_as_one_stream(db: &Db) {
    populate_long(&db.store).await;
    // A detail someone rewrote, still JSON but not in canonical form: the export writes its
    // canonical form either way.
    db.exec(r#"UPDATE audit_events SET detail = '{"b": 1, "a": [1.0, 2]}' WHERE seq = 300"#)
        .await;
    let everything = AuditFilter {
        oldest_first: true,
        ..AuditFilter::default()
    };
    // A time window that holds every event: read as one ordered stream of matches.
    let one_stream = AuditFilter {
        since: Some(0),
        ..everything.clone()
    };
    for format in [Format::Jsonl, Format::Csv] {
        let ranged = exported(db, &everything, format).await.expect("exports");
        let streamed = exported(db, &one_stream, format).await.expect("exports");
        assert_eq!(ranged, streamed, "{format:?}");
        let rows = if format == Format::Csv {
            csv::Reader::from_reader(ranged.as_bytes())
                .records()
                .count()
        } else {
            ranged.lines().count()
        };
        assert_eq!(rows, LONG as usize, "{format:?}");
    }
    let line_300 = exported(db, &everything, Format::Jsonl)
        .await
        .expect("exports")
        .lines()
        .nth(299)
        .map(str::to_owned)
        .expect("line 300");
    assert!(
        line_300.contains(r#""detail":{"a":[1.0,2],"b":1}"#),
        "{line_300}"
    );

    // A detail that is no longer JSON ends the export with an error, in ranges or not.
    db.exec("UPDATE audit_events SET detail = 'redacted' WHERE seq = 600")
        .await;
    for filter in [&everything, &one_stream] {
        let failed = exported(db, filter, Format::Jsonl).await;
        assert!(
            failed.as_ref().is_err_and(|e| e.contains("event 600")),
            "{failed:?}"
        );
    }
}

async fn an_untouched_history_verifies_with_its_count_and_head(db: &Db) {
    let written = populate(&db.store).await;
    let verdict = verify(&db.url, None).await;
    assert_eq!(verdict.code, 0, "{}", verdict.stderr);
    let head = &written.last().unwrap().hash;
    assert_eq!(
        verdict.stdout.trim(),
        format!(
            "audit chain intact: {EVENTS} events verified through seq {EVENTS}, head hash {head}"
        )
    );
}

async fn an_edited_event_is_named(db: &Db) {
    populate(&db.store).await;
    db.exec("UPDATE audit_events SET actor = 'mallory' WHERE seq = 5")
        .await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 5, "event 5 was edited");
    assert!(
        verdict.stderr.contains("verified through seq 4"),
        "{}",
        verdict.stderr
    );
}

async fn an_edited_event_with_a_recomputed_hash_is_named(db: &Db) {
    let written = populate(&db.store).await;
    let mut event = written[6].clone();
    event.detail = json!({ "n": 7, "comment": "nothing to see" });
    let hash = event.expected_hash();
    sqlx::query("UPDATE audit_events SET detail = $1, hash = $2 WHERE seq = 7")
        .bind(canonical_json(&event.detail))
        .bind(&hash)
        .execute(db.store.pool())
        .await
        .expect("edit");
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 7, "event 7 was rewritten");
}

async fn an_event_whose_detail_is_no_longer_json_is_named(db: &Db) {
    populate(&db.store).await;
    db.exec("UPDATE audit_events SET detail = 'redacted' WHERE seq = 3")
        .await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 3, "event 3 was edited");
    // Searches (the API, the request page's timeline) still answer, showing the text as it is.
    let found = db
        .store
        .audit_events(&AuditFilter::default())
        .await
        .expect("a search meeting the edited event answers");
    let edited = found
        .iter()
        .find(|e| e.seq == 3)
        .expect("event 3 is listed");
    assert_eq!(edited.detail, json!("redacted"));
    assert_eq!(found.len() as i64, EVENTS);
}

async fn a_deleted_event_is_named(db: &Db) {
    populate(&db.store).await;
    db.exec("DELETE FROM audit_events WHERE seq = 4").await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 4, "event 4 was deleted");
}

async fn a_deleted_last_event_is_named(db: &Db) {
    populate(&db.store).await;
    db.exec("DELETE FROM audit_events WHERE seq = 12").await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 12, "event 12 was deleted");
}

/// A row put past the head takes the place the next event needs: the broker cannot chain
/// anything after it, so the verification must not call the history intact.
async fn an_event_added_past_the_head_is_named(db: &Db) {
    populate(&db.store).await;
    db.exec(
        "INSERT INTO audit_events (seq, at, actor, actor_issuer, actor_subject, action,
            request_id, ticket, target, namespace, detail, prev_hash, hash)
         SELECT 13, at, 'bob', actor_issuer, 'bob', action, request_id, ticket, target,
            namespace, '{\"forged\":true}', hash, hash FROM audit_events WHERE seq = 12",
    )
    .await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 13, "event 13 was added");
}

async fn reordered_events_are_named_at_the_first_place_they_swapped(db: &Db) {
    populate(&db.store).await;
    db.exec("UPDATE audit_events SET seq = -1 WHERE seq = 9")
        .await;
    db.exec("UPDATE audit_events SET seq = 9 WHERE seq = 8")
        .await;
    db.exec("UPDATE audit_events SET seq = 8 WHERE seq = -1")
        .await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 8, "event 8 was reordered or replaced");
}

async fn a_consistent_rewrite_passes_alone_but_not_against_the_logged_checkpoints(db: &Db) {
    let written = populate(&db.store).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // What the broker logged while it wrote them: every event's own line, and a checkpoint.
    let every_event = log_lines(|| written.iter().for_each(log_event));
    let sparse = log_lines(|| {
        log_checkpoint(3, &written[2].hash, "interval");
        log_checkpoint(9, &written[8].hash, "interval");
    });
    rewrite_from(&db.store, 6).await;

    let alone = verify(&db.url, None).await;
    assert_eq!(
        alone.code, 0,
        "a consistent rewrite is what the chain alone cannot show: {}",
        alone.stderr
    );

    let verdict = verify(&db.url, Some(&checkpoints_file(&dir, &every_event))).await;
    assert_broken_at(&verdict, 6, "event 6 was rewritten");

    let verdict = verify(&db.url, Some(&checkpoints_file(&dir, &sparse))).await;
    assert_broken_at(
        &verdict,
        4,
        "the history was rewritten from event 4 at the earliest: event 9's hash differs",
    );

    let before = log_lines(|| log_checkpoint(5, &written[4].hash, "interval"));
    let verdict = verify(&db.url, Some(&checkpoints_file(&dir, &before))).await;
    assert_eq!(
        verdict.code, 0,
        "checkpoints before the rewrite agree: {}",
        verdict.stderr
    );
    assert!(
        verdict.stdout.contains("1 checkpoint agrees"),
        "{}",
        verdict.stdout
    );
}

async fn a_truncated_history_with_its_head_moved_back_fails_against_a_checkpoint(db: &Db) {
    let written = populate(&db.store).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let logged = log_lines(|| log_checkpoint(EVENTS, &written[11].hash, "breakglass applied"));
    db.exec("DELETE FROM audit_events WHERE seq > 9").await;
    sqlx::query("UPDATE audit_head SET seq = 9, hash = $1 WHERE id = 1")
        .bind(&written[8].hash)
        .execute(db.store.pool())
        .await
        .expect("move head back");

    assert_eq!(verify(&db.url, None).await.code, 0, "undetectable alone");
    let verdict = verify(&db.url, Some(&checkpoints_file(&dir, &logged))).await;
    assert_broken_at(&verdict, 10, "events 10 to 12 at least were deleted");
}

/// Four replicas, each with two writers, append at once, every event in its own transaction:
/// the head row makes them take turns, so the chain stays one line.
async fn replicas_appending_at_once_never_fork_the_chain(db: &Db) {
    const REPLICAS: usize = 4;
    const WRITERS: usize = 2;
    const EACH: i64 = 30;
    let connect = if db.url.starts_with("sqlite:") {
        format!("{}?mode=rwc", db.url)
    } else {
        db.url.clone()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for replica in 0..REPLICAS {
        let store = Store::connect(&connect).await.expect("replica connects");
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.spawn(async move {
                let actor = format!("replica-{replica}-writer-{writer}");
                for n in 0..EACH {
                    let mut tx = store.begin().await.expect("begin");
                    Store::append_audit(
                        &mut tx,
                        NewEvent {
                            at: NOW + n,
                            actor: &actor,
                            person: None,
                            action: AuditAction::Approved,
                            request_id: None,
                            ticket: Some("INC-2"),
                            target: None,
                            namespace: None,
                            detail: json!({ "n": n }),
                        },
                    )
                    .await
                    .expect("append");
                    // Give the other writers a chance to run into the head row meanwhile.
                    tokio::task::yield_now().await;
                    tx.commit().await.expect("commit");
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer finished");
    }
    // The replicas' last passes may still be under way: this one begins after them.
    db.store.chain_committed().await;

    let total = (REPLICAS * WRITERS) as i64 * EACH;
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi, COUNT(DISTINCT prev_hash) AS links
         FROM audit_events",
    )
    .fetch_one(db.store.pool())
    .await
    .expect("count");
    let counts: (i64, i64, i64, i64) =
        (row.get("n"), row.get("lo"), row.get("hi"), row.get("links"));
    assert_eq!(
        counts,
        (total, 1, total, total),
        "contiguous seqs, and no two events name the same predecessor"
    );
    let verdict = verify(&db.url, None).await;
    assert_eq!(verdict.code, 0, "{}", verdict.stderr);
    assert!(
        verdict
            .stdout
            .contains(&format!("{total} events verified through seq {total}")),
        "{}",
        verdict.stdout
    );
}

#[tokio::test]
async fn an_sqlite_event_given_a_value_of_another_type_is_named() {
    let db = Db::sqlite().await;
    populate(&db.store).await;
    // SQLite keeps whatever type a statement writes: the row no longer reads as an event.
    db.exec("UPDATE audit_events SET at = 'yesterday' WHERE seq = 2")
        .await;
    let verdict = verify(&db.url, None).await;
    assert_broken_at(&verdict, 2, "event 2 was edited: it cannot be read");
}

#[tokio::test]
async fn verify_reads_the_database_url_from_the_environment() {
    let db = Db::sqlite().await;
    populate(&db.store).await;
    let output = tokio::process::Command::new(BIN)
        .args(["audit", "verify"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("audit chain intact: 12 events"),
        "{stdout}"
    );
}

#[tokio::test]
async fn verify_says_it_could_not_check_when_there_is_no_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("missing.db").display());
    let verdict = verify(&url, None).await;
    assert_eq!(verdict.code, 2, "{}", verdict.stderr);
    assert!(
        verdict.stderr.starts_with("error: opening the database"),
        "{}",
        verdict.stderr
    );
    assert!(
        !dir.path().join("missing.db").exists(),
        "verification does not create a database"
    );
}
