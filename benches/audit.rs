//! The auditor's view at scale: export and search over a million audit events, through the
//! HTTP API of a broker running as its own process (`breakglass-broker dev`, SQLite), so that
//! the memory measured is the server's alone.
//!
//! 1. Load 100,000 events straight into the database, chained with correct hashes
//!    (`Store::append_audit_many`), start the server, export them as CSV and as JSON Lines,
//!    and note the server's peak RSS during each export (`VmHWM` from /proc/PID/status,
//!    reset through /proc/PID/clear_refs just before).
//! 2. Load 900,000 more, restart the server, export all 1,000,000 the same way: the peak
//!    must not grow with the number of events. The bench fails (exit 1) when, for either
//!    format, the peak at the full size exceeds the peak at a tenth of it by more than
//!    [`PEAK_GROWTH_MARGIN_KIB`].
//! 3. Export all of it once more as JSON Lines (untimed) and check, line by line as it
//!    streams in, that the export is itself an intact chain: seq 1, 2, 3, ... with no gap,
//!    each `prev_hash` the hash before it (the genesis hash first), and each `hash` the one
//!    recomputed from the record. The bench fails when it is not.
//! 4. 200 filtered searches over the million (by ticket, by person, by time window, by person
//!    within a time window): p50 and p99.
//! 5. Verify the whole chain with `audit verify`, and through the API.
//!
//! Run: `cargo bench --bench audit` (`EVENTS=N` for another final size; the first phase
//! loads a tenth of it). CI runs `EVENTS=10000` in the dev profile from `scripts/test`: the
//! checks above still hold at that size (an export that held every event would grow its peak
//! by more than the margin between 1,000 and 10,000 events).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use breakglass_broker::domain::AuditAction;
use breakglass_broker::domain::chain::{self, Fields, GENESIS_HASH};
use breakglass_broker::store::{NewEvent, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_breakglass-broker");
/// 2025-01-01T00:00:00Z; events are 30 s apart, so a million span about eleven months.
const START: i64 = 1_735_689_600_000;
const STEP_MS: i64 = 30_000;
const TICKETS: u64 = 20_000;
const PEOPLE: u64 = 2_000;
const STEPS: [AuditAction; 7] = [
    AuditAction::Created,
    AuditAction::Approved,
    AuditAction::Approved,
    AuditAction::FullyApproved,
    AuditAction::Applying,
    AuditAction::Applied,
    AuditAction::Expired,
];
const TARGETS: [&str; 5] = ["prod-gke", "staging-gke", "run-eu", "run-us", "batch"];
const SEARCHES: usize = 200;
/// How much more the server's peak RSS during an export may be at the full size than at a
/// tenth of it. The peak is not exactly flat (allocator arenas, SQLite's page cache filling
/// as the database grows, the connection pool): between 1,000 and 10,000 events it rose by
/// 1.2–2.0 MiB in runs here. An export that holds its events in memory grows by more even at
/// that size (4.6 MiB as CSV, 9.4 MiB as JSON Lines, measured), and by far more at a million.
const PEAK_GROWTH_MARGIN_KIB: u64 = 3584;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    breakglass_broker::app::install_crypto();
    let total: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let first = total / 10;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("broker.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    println!(
        "audit benchmark: SQLite at {}, server = `breakglass-broker dev` as a child process",
        db.display()
    );

    let store = Store::connect(&url).await?;
    load(&store, 0, first).await?;
    store.pool().close().await;
    let small = {
        let server = Server::start(dir.path()).await?;
        let exports = export_both(&server, first).await?;
        server.stop().await;
        exports
    };

    let store = Store::connect(&url).await?;
    load(&store, first, total).await?;
    store.pool().close().await;
    let server = Server::start(dir.path()).await?;
    let large = export_both(&server, total).await?;
    let chain = verify_export(&server, total).await?;
    let searches = search(&server, total).await?;
    let started = Instant::now();
    let report = server.post("/api/v1/audit/verification").await?;
    let api_verify = started.elapsed();
    anyhow::ensure!(report["intact"] == true, "the chain verifies: {report}");
    server.stop().await;

    let started = Instant::now();
    let output = tokio::process::Command::new(BIN)
        .args(["audit", "verify", "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .await?;
    let cli_verify = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    println!();
    println!("export over HTTP (server RSS: before the export -> peak during it)");
    for e in small.iter().chain(&large) {
        println!(
            "  {:>9} events  {:<5}  {:>6.2} s  {:>9.0} events/s  {:>6.1} MB/s  RSS {:>6.1} -> {:>6.1} MiB",
            e.events,
            e.format,
            e.time.as_secs_f64(),
            e.events as f64 / e.time.as_secs_f64(),
            e.bytes as f64 / 1e6 / e.time.as_secs_f64(),
            e.rss_before_kib as f64 / 1024.0,
            e.peak_kib as f64 / 1024.0,
        );
    }
    println!("  the JSON Lines export is an intact chain of {chain} events");
    let growth = flat_memory(&small, &large);
    for (format, kib) in &growth {
        println!(
            "  {format:<5} the rise during the export grew by {:>6.1} MiB from {first} to {total} events (at most {:.1} MiB allowed)",
            *kib as f64 / 1024.0,
            PEAK_GROWTH_MARGIN_KIB as f64 / 1024.0
        );
    }
    println!();
    println!(
        "search over {total} events, {SEARCHES} queries through GET /api/v1/audit (newest first, 100 per page)"
    );
    for (kind, samples) in &searches {
        println!(
            "  {kind:<22} n={:<4} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            samples.len(),
            quantile(samples, 0.50),
            quantile(samples, 0.99),
            quantile(samples, 1.0)
        );
    }
    println!();
    println!(
        "verify the whole chain: `audit verify` {:.2} s; POST /api/v1/audit/verification {:.2} s\n  {}",
        cli_verify.as_secs_f64(),
        api_verify.as_secs_f64(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let grown: Vec<String> = growth
        .iter()
        .filter(|(_, kib)| *kib > PEAK_GROWTH_MARGIN_KIB as i64)
        .map(|(format, kib)| format!("{format} by {:.1} MiB", *kib as f64 / 1024.0))
        .collect();
    anyhow::ensure!(
        grown.is_empty(),
        "export memory grows with the number of events: from {first} to {total} events the \
         server's peak RSS grew ({}), more than the {:.1} MiB allowed",
        grown.join(", "),
        PEAK_GROWTH_MARGIN_KIB as f64 / 1024.0
    );
    Ok(())
}

/// Per format, how much more the server's RSS rose during the large export than during the
/// small one, in KiB (negative when less). The rise is measured from just before each export,
/// so what the server held already (its code, the connection pool, caches an earlier export
/// warmed) does not count.
fn flat_memory(small: &[Export], large: &[Export]) -> Vec<(&'static str, i64)> {
    small
        .iter()
        .zip(large)
        .map(|(s, l)| (l.format, l.growth_kib() - s.growth_kib()))
        .collect()
}

/// Exports everything as JSON Lines and checks, as it streams in, that the records form an
/// intact chain from the genesis; returns how many there were.
async fn verify_export(server: &Server, events: u64) -> anyhow::Result<u64> {
    let mut response = server
        .http
        .get(format!("{}/api/v1/audit/export?format=jsonl", server.base))
        .bearer_auth(&server.token)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "export: {}",
        response.status()
    );
    let mut chain = ChainCheck::default();
    let mut partial: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        partial.extend_from_slice(&chunk);
        let complete = partial
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in partial[..complete].split(|b| *b == b'\n') {
            if !line.is_empty() {
                chain.push(line)?;
            }
        }
        partial.drain(..complete);
    }
    anyhow::ensure!(
        partial.is_empty(),
        "the export ends in the middle of a line"
    );
    anyhow::ensure!(
        chain.seq == events,
        "the exported chain holds {} events, not {events}",
        chain.seq
    );
    Ok(chain.seq)
}

/// The walk over an exported chain: the last seq and hash seen.
struct ChainCheck {
    seq: u64,
    hash: String,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainCheck {
    /// Checks one exported record against the one before it and against its own hash.
    fn push(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let record: Value = serde_json::from_slice(line)?;
        let text = |field: &str| record[field].as_str();
        let seq = record["seq"].as_u64();
        anyhow::ensure!(
            seq == Some(self.seq + 1),
            "the exported chain is not intact: after seq {} comes {}",
            self.seq,
            record["seq"]
        );
        let seq = self.seq + 1;
        anyhow::ensure!(
            text("prev_hash") == Some(self.hash.as_str()),
            "the exported chain is not intact: seq {seq}'s prev_hash is not the hash of seq {}",
            self.seq
        );
        let at = text("at")
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.timestamp_millis())
            .ok_or_else(|| anyhow::anyhow!("seq {seq}: no time"))?;
        let fields = Fields {
            at,
            actor: text("actor").unwrap_or_default(),
            person: text("actor_issuer").zip(text("actor_subject")),
            action: text("action").unwrap_or_default(),
            request_id: text("request_id"),
            ticket: text("ticket"),
            target: text("target"),
            namespace: text("namespace"),
        };
        let hash = chain::hash(&self.hash, seq as i64, &fields, &record["detail"]);
        anyhow::ensure!(
            text("hash") == Some(hash.as_str()),
            "the exported chain is not intact: seq {seq}'s hash is not the one its record gives"
        );
        self.seq = seq;
        self.hash = hash;
        Ok(())
    }
}

/// Appends events `from..to` (by global index) through the store's bulk append.
async fn load(store: &Store, from: u64, to: u64) -> anyhow::Result<()> {
    const BATCH: u64 = 10_000;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(from);
    let mut i = from;
    while i < to {
        let end = (i + BATCH).min(to);
        let rows: Vec<Row> = (i..end).map(|i| Row::new(i, &mut rng)).collect();
        let events: Vec<NewEvent<'_>> = rows.iter().map(Row::event).collect();
        let mut tx = store.begin().await?;
        Store::append_audit_many(&mut tx, &events).await?;
        tx.commit().await?;
        i = end;
    }
    let took = started.elapsed();
    println!(
        "loaded events {from}..{to} in {:.1} s ({:.0} events/s)",
        took.as_secs_f64(),
        (to - from) as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// One generated event: seven steps per request, requests spread over tickets, people,
/// targets and namespaces.
struct Row {
    at: i64,
    actor: String,
    action: AuditAction,
    request_id: String,
    ticket: String,
    target: &'static str,
    namespace: String,
    detail: Value,
}

impl Row {
    fn new(i: u64, rng: &mut StdRng) -> Row {
        let request = i / 7;
        let step = (i % 7) as usize;
        let actor = match step {
            0 => format!("user-{}", request % PEOPLE),
            1..=3 => format!("user-{}", rng.gen_range(0..PEOPLE)),
            _ => "breakglass-broker".to_owned(),
        };
        Row {
            at: START + i as i64 * STEP_MS,
            actor,
            action: STEPS[step],
            request_id: format!("req-{request:08}"),
            ticket: format!("INC-{}", request % TICKETS),
            target: TARGETS[(request % 5) as usize],
            namespace: format!("ns-{}", request % 40),
            detail: json!({
                "comment": format!("bench event {i}"),
                "digest": format!("sha256:{:064x}", u128::from(request) * 0x9e37_79b9_7f4a_7c15),
            }),
        }
    }

    fn event(&self) -> NewEvent<'_> {
        NewEvent {
            at: self.at,
            actor: &self.actor,
            person: None,
            action: self.action,
            request_id: Some(&self.request_id),
            ticket: Some(&self.ticket),
            target: Some(self.target),
            namespace: Some(&self.namespace),
            detail: self.detail.clone(),
        }
    }
}

/// The broker as a child process, and an auditor's token for it.
struct Server {
    child: tokio::process::Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path) -> anyhow::Result<Server> {
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut child = tokio::process::Command::new(BIN)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            // One malloc arena: otherwise each thread the export's task happens to run on
            // touches an arena of its own, which shows as noise in the peak.
            .env("MALLOC_ARENA_MAX", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut base, mut issuer) = (None, None);
        while base.is_none() || issuer.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await??
                .ok_or_else(|| anyhow::anyhow!("the server ended before its banner"))?;
            let value = |prefix: &str| {
                line.trim()
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned)
            };
            base = base.or_else(|| value("broker:"));
            issuer = issuer.or_else(|| value("OIDC issuer:"));
        }
        let (base, issuer) = (base.unwrap_or_default(), issuer.unwrap_or_default());
        let http = reqwest::Client::new();
        let token: Value = http
            .get(format!("{issuer}/token?persona=dave"))
            .send()
            .await?
            .json()
            .await?;
        let token = token["id_token"].as_str().unwrap_or_default().to_owned();
        Ok(Server {
            child,
            base,
            token,
            http,
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the server has exited"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    async fn post(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A figure from /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

struct Export {
    events: u64,
    format: &'static str,
    time: Duration,
    bytes: u64,
    rss_before_kib: u64,
    peak_kib: u64,
}

impl Export {
    /// How far the server's RSS rose during the export, in KiB.
    fn growth_kib(&self) -> i64 {
        self.peak_kib as i64 - self.rss_before_kib as i64
    }
}

async fn export_both(server: &Server, events: u64) -> anyhow::Result<Vec<Export>> {
    // One request first, so the connection pool and the code are warm for both formats.
    server.get("/api/v1/audit?limit=1").await?;
    let mut done = Vec::new();
    for format in ["csv", "jsonl"] {
        done.push(export(server, events, format).await?);
    }
    Ok(done)
}

/// Exports everything, counting rows as they stream in; the peak RSS is the server's
/// high-water mark, reset just before (falling back to the largest RSS sampled meanwhile).
async fn export(server: &Server, events: u64, format: &'static str) -> anyhow::Result<Export> {
    let pid = server.pid()?;
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let rss_before_kib = status_kib(pid, "VmRSS:");
    let sampled = Arc::new(AtomicU64::new(rss_before_kib));
    let sampling = tokio::spawn({
        let sampled = sampled.clone();
        async move {
            loop {
                sampled.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let started = Instant::now();
    let mut response = server
        .http
        .get(format!(
            "{}/api/v1/audit/export?format={format}",
            server.base
        ))
        .bearer_auth(&server.token)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "export: {}",
        response.status()
    );
    let (mut bytes, mut lines) = (0_u64, 0_u64);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let time = started.elapsed();
    sampling.abort();
    let rows = if format == "csv" { lines - 1 } else { lines };
    anyhow::ensure!(rows == events, "{format}: {rows} rows for {events} events");
    let sampled = sampled
        .load(Ordering::Relaxed)
        .max(status_kib(pid, "VmRSS:"));
    let peak_kib = if reset {
        status_kib(pid, "VmHWM:").max(sampled)
    } else {
        sampled
    };
    Ok(Export {
        events,
        format,
        time,
        bytes,
        rss_before_kib,
        peak_kib,
    })
}

/// p-quantile of latencies in milliseconds (nearest rank).
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs the searches, one at a time, round-robin over four kinds; latencies per kind and for
/// all together.
async fn search(server: &Server, total: u64) -> anyhow::Result<Vec<(&'static str, Vec<f64>)>> {
    let mut rng = StdRng::seed_from_u64(42);
    let span = total as i64 * STEP_MS;
    let iso = breakglass_broker::clock::rfc3339;
    let kinds = ["ticket", "person", "time window", "person in time window"];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut found = 0_usize;
    for n in 0..SEARCHES {
        let kind = n % kinds.len();
        let window = |rng: &mut StdRng, longest: i64| {
            let length = rng.gen_range(3_600_000..=longest);
            let since = START + rng.gen_range(0..(span - length).max(1));
            (iso(since), iso(since + length))
        };
        let query = match kind {
            0 => format!("ticket=INC-{}", rng.gen_range(0..TICKETS)),
            1 => format!("actor=user-{}", rng.gen_range(0..PEOPLE)),
            2 => {
                let (since, until) = window(&mut rng, 7 * 86_400_000);
                format!("since={since}&until={until}")
            }
            _ => {
                let (since, until) = window(&mut rng, 30 * 86_400_000);
                format!(
                    "actor=user-{}&since={since}&until={until}",
                    rng.gen_range(0..PEOPLE)
                )
            }
        };
        let started = Instant::now();
        let page = server.get(&format!("/api/v1/audit?{query}")).await?;
        samples[kind].push(started.elapsed().as_secs_f64() * 1e3);
        found += page.as_array().map_or(0, Vec::len);
    }
    anyhow::ensure!(found > 0, "the searches found something");
    let all: Vec<f64> = samples.concat();
    let mut out: Vec<(&'static str, Vec<f64>)> = kinds.into_iter().zip(samples).collect();
    out.push(("all", all));
    Ok(out)
}
