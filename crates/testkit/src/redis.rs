//! Redis for tests that need their own: a `redis-server` on a free loopback
//! port, with its data in a directory of its own, that a test can kill
//! (SIGKILL) and start again on the same port and data ([`RedisServer`]); a
//! Redis Cluster of three such masters ([`RedisCluster`]); and [`command`], a
//! minimal RESP client for looking into a Redis (keys, subscriptions) that
//! follows a cluster's redirections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server`, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    appendonly: bool,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

impl RedisServer {
    /// Starts one; with `appendonly`, every write is fsynced to its AOF
    /// (`appendfsync always`), so a kill loses nothing it acknowledged.
    pub fn start(appendonly: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("sb-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut server = Self { port: free_port(), dir, appendonly, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn_redis(self.port, &self.dir, self.appendonly, &[]));
    }

    /// One command against this server.
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        command_at(self.port, args)
    }
}

/// Starts `redis-server` on `port` with its data in `dir` and waits until it answers.
fn spawn_redis(port: u16, dir: &std::path::Path, appendonly: bool, extra: &[String]) -> Child {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if appendonly {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while command_at(port, &["PING"]).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A private Redis Cluster of three masters (no replicas), each a
/// `redis-server` with its own port, cluster bus port and data directory;
/// killed when dropped.
pub struct RedisCluster {
    pub masters: Vec<RedisMaster>,
}

/// One master of a [`RedisCluster`].
pub struct RedisMaster {
    pub port: u16,
    bus: u16,
    dir: PathBuf,
    appendonly: bool,
    child: Option<Child>,
}

impl RedisMaster {
    fn spawn(&mut self) {
        let extra = [
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            "nodes.conf".to_owned(),
            "--cluster-node-timeout".to_owned(),
            "1000".to_owned(),
            "--cluster-port".to_owned(),
            self.bus.to_string(),
        ];
        self.child = Some(spawn_redis(self.port, &self.dir, self.appendonly, &extra));
    }
}

impl RedisCluster {
    /// Starts three masters, forms the cluster and waits until it serves
    /// every slot; with `appendonly`, each fsyncs every write to its AOF.
    pub fn start(appendonly: bool) -> Self {
        let base = std::env::temp_dir().join(format!("sb-redis-cluster-{}", uuid::Uuid::new_v4().simple()));
        let mut masters = Vec::new();
        for i in 0..3 {
            let dir = base.join(i.to_string());
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            let mut master =
                RedisMaster { port: free_port(), bus: free_port(), dir, appendonly, child: None };
            master.spawn();
            masters.push(master);
        }
        let nodes: Vec<String> = masters.iter().map(|m| format!("127.0.0.1:{}", m.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stderr));
        let cluster = Self { masters };
        cluster.wait_ok();
        cluster
    }

    /// `redis-cluster://` naming every master.
    pub fn url(&self) -> String {
        let mut ports = self.masters.iter().map(|m| m.port);
        let first = ports.next().unwrap_or_default();
        let rest: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    /// Waits until every master says the cluster is ok.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self.masters.iter().all(|m| {
                command_at(m.port, &["CLUSTER", "INFO"])
                    .is_ok_and(|r| r.texts().concat().contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the master that serves `key`'s slot (the others answer
    /// `MOVED`).
    pub fn master_of(&self, key: &str) -> usize {
        self.masters
            .iter()
            .position(|m| !command_at(m.port, &["EXISTS", key]).is_err_and(|e| e.starts_with("MOVED")))
            .unwrap_or_else(|| panic!("no master serves {key}"))
    }

    /// Kills master `i` at once (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.masters[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts master `i` again on its port, bus port, data and cluster
    /// configuration, and waits until the cluster is ok.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.masters[i].spawn();
        self.wait_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            self.kill(i);
        }
        if let Some(base) = self.masters.first().and_then(|m| m.dir.parent().map(PathBuf::from)) {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    Text(String),
    List(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            Reply::Text(t) => t.parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// The texts of a list reply (nested lists flattened).
    pub fn texts(&self) -> Vec<String> {
        match self {
            Reply::Text(t) => vec![t.clone()],
            Reply::List(items) => items.iter().flat_map(Reply::texts).collect(),
            _ => Vec::new(),
        }
    }
}

/// One command against the Redis at `url` (`redis://host:port`, or a
/// `redis-cluster://` URL: then a `MOVED` redirection is followed).
pub fn command(url: &str, args: &[&str]) -> Result<Reply, String> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    let port = authority.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or("no port")?;
    match command_at(port, args) {
        Err(e) if e.starts_with("MOVED ") => {
            let to = e.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or(e.clone())?;
            command_at(to, args)
        }
        other => other,
    }
}

fn command_at(port: u16, args: &[&str]) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Ok(Reply::Text(rest.to_owned())),
        "-" => Err(rest.to_owned()),
        ":" => Ok(Reply::Int(rest.parse().map_err(|_| line.to_owned())?)),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| line.to_owned())?;
            if n < 0 {
                return Ok(Reply::Nil);
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            Ok(Reply::Text(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| line.to_owned())?;
            if n < 0 {
                return Ok(Reply::Nil);
            }
            (0..n).map(|_| read_reply(r)).collect::<Result<Vec<_>, _>>().map(Reply::List)
        }
        _ => Err(format!("unexpected reply `{line}`")),
    }
}
