//! Postgres for tests that need their own: a cluster made with `initdb` in a
//! directory of its own, on a free loopback port, that a test can stop and
//! start again (an outage) or start with TLS on. Stopped and removed when
//! dropped.
//!
//! Uses the programs in `SB_PG_BIN` (this checkout's Postgres, with pgvector:
//! `scripts/services pg-bin`), or with TLS those in `SB_PG_TLS_BIN` (a Postgres
//! built with TLS: `scripts/services tls-postgres`). Postgres refuses to run as
//! root, so as root they run as the `switchboard-pg` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A private Postgres cluster; superuser `postgres`, trusted on loopback.
pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
    options: String,
    /// The variable naming the bin directory.
    bin: &'static str,
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A Postgres program from the bin directory `var` names, run as the user
/// Postgres runs as.
fn pg(var: &str, program: &str) -> Command {
    let dir = std::env::var(var).unwrap_or_else(|_| panic!("{var}: run the tests through scripts/test"));
    let bin = Path::new(&dir).join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "switchboard-pg", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

impl PostgresServer {
    /// Makes and starts a cluster of this checkout's Postgres.
    pub fn start() -> Self {
        Self::make("SB_PG_BIN", |_| {}, "")
    }

    /// Makes and starts a cluster of the Postgres built with TLS. `prepare`
    /// may put files into its directory first (certificates); `options` are
    /// extra server settings (`-c name=value …`), which may name `{dir}` for
    /// that directory.
    pub fn start_tls(prepare: impl FnOnce(&Path), options: &str) -> Self {
        Self::make("SB_PG_TLS_BIN", prepare, options)
    }

    fn make(bin: &'static str, prepare: impl FnOnce(&Path), options: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sb-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        prepare(&dir);
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "switchboard-pg"])
                .arg(&dir)
                .status()
                .unwrap_or_else(|e| panic!("chown: {e}"));
            assert!(status.success(), "chown {}", dir.display());
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let out = pg(bin, "initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("initdb: {e}"));
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {dir} -c fsync=off {options}",
            dir = dir.display(),
            options = options.replace("{dir}", &dir.display().to_string())
        );
        let server = Self { port, dir, options, bin };
        server.start_again();
        server
    }

    /// The directory the cluster lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for `user` (with `:password` if it has one) on database `postgres`.
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let out = pg(self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "30", "-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &self.options, "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stops the cluster the way an operator's restart does (`pg_ctl stop -m
    /// fast`: open sessions are ended, nothing is lost), and waits until it is down.
    pub fn stop(&self) {
        let out = pg(self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "fast", "stop"])
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = pg(self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
