//! Redis for tests that need their own: a `redis-server` on a free loopback
//! port, with its data in a directory of its own, that a test can kill
//! (SIGKILL) and start again on the same port and data; and [`command`], a
//! minimal RESP client for looking into a Redis (keys, subscriptions).

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
        let mut command = Command::new("redis-server");
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.appendonly {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("cannot start redis-server: {e}")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while command_at(self.port, &["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command against this server.
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        command_at(self.port, args)
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

/// One command against the Redis at `url` (`redis://host:port`).
pub fn command(url: &str, args: &[&str]) -> Result<Reply, String> {
    let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).ok_or("no port")?;
    command_at(port, args)
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
