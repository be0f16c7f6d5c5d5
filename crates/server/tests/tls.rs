//! TLS to Postgres and Redis, as hosted ones require, against a Postgres and a
//! Redis the test starts with TLS on, using a CA and a certificate it makes
//! (for `localhost` only): a node connects through a valid chain
//! (`sslmode=verify-full` with `sslrootcert`, `rediss://` with
//! `REDIS_CA_CERT`), and refuses to start, saying why, with the wrong CA or
//! the wrong host name.
//!
//! Needs `SB_PG_TLS_BIN`, the programs of a Postgres built with TLS
//! (`scripts/services tls-postgres` installs and names one), and `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_testkit::{JWT_SECRET, Node, PostgresServer};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A CA, a second unrelated CA, and a server certificate for `localhost` signed by the first.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make() -> Self {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "switchboard test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other = other_params.self_signed(&other_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postgres with TLS on, with the test's certificate for `localhost`.
fn tls_postgres(certs: &Certs) -> PostgresServer {
    PostgresServer::start_tls(
        |dir| {
            for name in ["server.crt", "server.key"] {
                std::fs::copy(certs.path(name), dir.join(name)).unwrap();
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        },
        "-c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
    )
}

/// A URL for `user` over TLS to `host`, verified against `ca`.
fn tls_url(postgres: &PostgresServer, user: &str, host: &str, ca: &Path) -> String {
    format!(
        "postgres://{user}@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}",
        postgres.port,
        ca.display()
    )
}

/// A Redis that speaks only TLS; killed when dropped.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
}

impl TlsRedis {
    fn start(certs: &Certs) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--tls-cert-file")
            .arg(certs.path("server.crt"))
            .arg("--tls-key-file")
            .arg(certs.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.path("ca.pem"))
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server with TLS did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchboard serve` with `env` and waits for it to exit (it must, on a
/// bad certificate): its exit status and what it printed.
fn serve_until_exit(env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", JWT_SECRET)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    // Read as it comes: a child whose stderr pipe filled up would block on
    // its next log line and never get to exit.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // Long enough for a loaded machine; what it said is in the panic.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), reader.join().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = reader.join().unwrap();
            panic!("serve did not stop within 60 s on a certificate it cannot verify; it said:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn nodes_connect_through_a_valid_chain_and_refuse_a_wrong_ca_or_host_name_at_start() {
    let certs = Certs::make();
    let postgres = tls_postgres(&certs);
    let redis = TlsRedis::start(&certs);
    let (ca, other) = (certs.path("ca.pem"), certs.path("other-ca.pem"));

    // The application's role, made over TLS as this server's superuser.
    let admin = tls_url(&postgres, "postgres", "localhost", &ca);
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.expect("the superuser over TLS");
    sqlx::Executor::execute(&mut conn, "CREATE ROLE sb_tls_app LOGIN PASSWORD 'sb_tls_pw'").await.unwrap();
    let app = tls_url(&postgres, "sb_tls_app:sb_tls_pw", "localhost", &ca);

    // A valid chain: the node serves, ready on both.
    let redis_url = format!("rediss://localhost:{}", redis.port);
    let ca_text = ca.display().to_string();
    let node = Node::spawn_with(
        BIN,
        "tls-node",
        &[("DATABASE_URL", &app), ("REDIS_URL", &redis_url), ("REDIS_CA_CERT", &ca_text)],
    );
    let ready = node.get_json("/health/ready", "").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    drop(node);

    // The wrong CA, or the wrong host name, for either: no start, and why.
    let other_text = other.display().to_string();
    let by_ip = format!("rediss://127.0.0.1:{}", redis.port);
    let (wrong_ca, wrong_host) = (
        tls_url(&postgres, "sb_tls_app:sb_tls_pw", "localhost", &other),
        tls_url(&postgres, "sb_tls_app:sb_tls_pw", "127.0.0.1", &ca),
    );
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 4] = [
        ("postgres, another CA", vec![("DATABASE_URL", &wrong_ca)], "TLS to Postgres failed"),
        (
            "postgres, a host name the certificate does not name",
            vec![("DATABASE_URL", &wrong_host)],
            "TLS to Postgres failed",
        ),
        (
            "redis, another CA",
            vec![("DATABASE_URL", &app), ("REDIS_URL", &redis_url), ("REDIS_CA_CERT", &other_text)],
            "TLS to Redis failed",
        ),
        (
            "redis, a host name the certificate does not name",
            vec![("DATABASE_URL", &app), ("REDIS_URL", &by_ip), ("REDIS_CA_CERT", &ca_text)],
            "TLS to Redis failed",
        ),
    ];
    for (what, env, expected) in cases {
        let (ok, stderr) = serve_until_exit(&env);
        assert!(!ok, "{what}: started anyway");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(!stderr.contains("sb_tls_pw"), "{what}: a password in the output");
    }
}
