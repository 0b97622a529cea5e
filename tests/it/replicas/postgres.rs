//! A PostgreSQL server of a test's own, which the test may stop and start.

use std::ffi::OsStr;
use std::path::PathBuf;

use tempfile::TempDir;

/// A PostgreSQL server of this test's own, in a temp dir on a free port, so that it can be
/// stopped without disturbing anything else. PostgreSQL refuses to run as root; as root, it
/// runs as the `postgres` user the server packages create.
pub(super) struct PrivatePostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    pub(super) fn start() -> PrivatePostgres {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = std::fs::metadata(dir.path()).expect("temp dir").uid() == 0;
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "the temp dir is handed to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let postgres = PrivatePostgres {
            bin: postgres_bin(),
            port,
            as_postgres,
            dir,
        };
        postgres.run(
            "initdb",
            &[
                OsStr::new("-D"),
                postgres.data().as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("--no-sync"),
            ],
        );
        postgres.up();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(super) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub(super) fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                OsStr::new("-D"),
                self.data().as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("start"),
            ],
        );
    }

    /// Stops the server the way an operator (or a failover) would: sessions are cut.
    pub(super) fn down(&self) {
        self.run(
            "pg_ctl",
            &[
                OsStr::new("-D"),
                self.data().as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
                OsStr::new("stop"),
            ],
        );
    }

    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&OsStr]) {
        let output = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("PostgreSQL tools run");
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's server programs (Debian keeps them out of PATH).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL server programs under /usr/lib/postgresql/*/bin")
}
