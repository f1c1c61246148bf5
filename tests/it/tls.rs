//! Upstream TLS (`rediss://`): a real `redis-server` with TLS, certificates
//! made with rcgen, and the sidecar in front (clients stay plaintext).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Nearby, RawConn, free_port, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

// ---------------------------------------------------------------------------
// Certificates

/// PEM files in a temporary directory: a CA, a server certificate it signed
/// (127.0.0.1, localhost, redis.test), a client certificate it signed, and
/// an unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("nearby-tls-")
            .tempdir()
            .expect("tempdir");
        let ca = make_ca("nearby test CA");
        let other_ca = make_ca("some other CA");

        let mut server = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "redis.test".to_string(),
        ])
        .unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "redis.test");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &ca).unwrap();

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "nearby sidecar");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &ca).unwrap();

        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("other-ca.pem", other_ca.pem());
        write("server.pem", server_cert.pem());
        write("server.key", server_key.serialize_pem());
        write("client.pem", client_cert.pem());
        write("client.key", client_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// A TLS-only redis-server

/// `redis-server` listening only on a TLS port (`--port 0`). Killed on drop.
struct TlsRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsRedis {
    /// `auth_clients`: `--tls-auth-clients yes|no`. `extra`: more arguments.
    fn start(pki: &Pki, auth_clients: bool, extra: &[&str]) -> TlsRedis {
        for _ in 0..3 {
            if let Some(s) = Self::try_start(pki, auth_clients, extra) {
                return s;
            }
        }
        panic!("redis-server with TLS did not start (port taken three times)");
    }

    fn try_start(pki: &Pki, auth_clients: bool, extra: &[&str]) -> Option<TlsRedis> {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("nearby-redis-tls-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &pki.arg("server.pem")])
            .args(["--tls-key-file", &pki.arg("server.key")])
            .args(["--tls-ca-cert-file", &pki.arg("ca.pem")])
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn redis-server");
        let mut server = TlsRedis { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = server.log();
            if let Ok(Some(status)) = server.child.try_wait() {
                if text.contains("Address already in use") {
                    return None;
                }
                panic!("redis-server (TLS) exited ({status}); log:\n{text}");
            }
            if text.contains("Ready to accept connections") {
                return Some(server);
            }
            if Instant::now() >= deadline {
                panic!("redis-server (TLS) on port {port} not ready within 5 s; log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }

    /// `redis-cli` over TLS with the test CA and the client certificate.
    fn cli(&self, pki: &Pki, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--tls"])
            .args(["--cacert", &pki.arg("ca.pem")])
            .args(["--cert", &pki.arg("client.pem")])
            .args(["--key", &pki.arg("client.key")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("failed to run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- redis-server (TLS) log ----\n{}\n----", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

/// SET then GET through the sidecar; panics with the replies otherwise.
fn set_get(sidecar: &Nearby, key: &str, value: &str) {
    let mut c = RawConn::connect(sidecar.port);
    let set = c.cmd(&["SET", key, value]);
    assert_eq!(text(&set), "+OK\r\n", "SET through the sidecar");
    let get = c.cmd(&["GET", key]);
    assert_eq!(
        text(&get),
        format!("${}\r\n{value}\r\n", value.len()),
        "GET through the sidecar"
    );
}

/// The first error reply to SET within 10 s (the sidecar may answer
/// differently while it first connects). Panics if SET ever succeeds.
fn set_error(sidecar: &Nearby) -> String {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        let mut c = RawConn::connect(sidecar.port);
        last = text(&c.cmd(&["SET", "k", "v"]));
        assert_ne!(last, "+OK\r\n", "SET succeeded where TLS should fail");
        last.starts_with('-') && last.to_lowercase().contains("tls")
    });
    assert!(ok, "no TLS error reply; last reply: {last:?}");
    last
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn set_get_over_tls_with_ca_file() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false, &[]);
    let ca = pki.arg("ca.pem");
    let sidecar = Nearby::start(&["--primary", &redis.url("127.0.0.1"), "--tls-ca-file", &ca]);
    set_get(&sidecar, "tls:key", "over TLS");
    // The value really is in the TLS-only server.
    assert_eq!(redis.cli(&pki, &["GET", "tls:key"]), "over TLS");
    // A large value exercises TLS records split over many socket writes.
    let big = "x".repeat(3 << 20);
    set_get(&sidecar, "tls:big", &big);
    // Pipelined requests on one client connection.
    let mut c = RawConn::connect(sidecar.port);
    for _ in 0..100 {
        c.send_cmd(&["INCR", "tls:counter"]);
    }
    let replies = c.read_n_replies(100);
    assert_eq!(text(&replies[99]), ":100\r\n");
}

#[test]
fn dns_host_verifies_against_dns_san() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false, &[]);
    let ca = pki.arg("ca.pem");
    let sidecar = Nearby::start(&["--primary", &redis.url("localhost"), "--tls-ca-file", &ca]);
    set_get(&sidecar, "tls:localhost", "by name");
}

#[test]
fn wrong_ca_is_a_clear_error() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false, &[]);
    let other = pki.arg("other-ca.pem");
    let mut sidecar = Nearby::start(&[
        "--primary",
        &redis.url("127.0.0.1"),
        "--tls-ca-file",
        &other,
    ]);
    sidecar.expect_log(
        "WARN",
        "error=TLS: handshake with 127.0.0.1 failed: invalid peer certificate: UnknownIssuer",
    );
    let err = set_error(&sidecar);
    assert!(
        err.contains(&format!("127.0.0.1:{}", redis.port)),
        "error names the upstream: {err:?}"
    );
    assert!(
        err.to_lowercase().contains("certificate"),
        "error names a certificate problem: {err:?}"
    );
    // Still serving, no panic; PING tells the truth about the upstream.
    let mut c = RawConn::connect(sidecar.port);
    assert_eq!(text(&c.cmd(&["CLIENT", "GETNAME"])), "$-1\r\n");
    let ping = text(&c.cmd(&["PING"]));
    assert!(
        ping.starts_with("-ERR nearby: ") && ping.to_lowercase().contains("certificate"),
        "{ping:?}"
    );
    assert!(sidecar.is_running());
    assert!(!sidecar.log().contains("panicked"), "{}", sidecar.log());
}

#[test]
fn public_roots_do_not_trust_a_private_ca() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false, &[]);
    // No --tls-ca-file: the public web PKI roots.
    let sidecar = Nearby::start(&["--primary", &redis.url("127.0.0.1")]);
    sidecar.expect_log(
        "WARN",
        "error=TLS: handshake with 127.0.0.1 failed: invalid peer certificate: UnknownIssuer",
    );
    let err = set_error(&sidecar);
    assert!(
        err.to_lowercase().contains("certificate"),
        "error names a certificate problem: {err:?}"
    );
}

#[test]
fn server_name_override() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false, &[]);
    let ca = pki.arg("ca.pem");
    let url = redis.url("127.0.0.1");
    let sidecar = Nearby::start(&[
        "--primary",
        &url,
        "--tls-ca-file",
        &ca,
        "--tls-server-name",
        "redis.test",
    ]);
    set_get(&sidecar, "tls:sni", "named");
    drop(sidecar);

    // A name the certificate does not carry fails verification.
    let sidecar = Nearby::start(&[
        "--primary",
        &url,
        "--tls-ca-file",
        &ca,
        "--tls-server-name",
        "elsewhere.test",
    ]);
    sidecar.expect_log(
        "WARN",
        "error=TLS: handshake with elsewhere.test failed: invalid peer certificate: certificate not valid for name \"elsewhere.test\"",
    );
    let err = set_error(&sidecar);
    assert!(
        err.contains("not valid for name"),
        "error names the name mismatch: {err:?}"
    );
}

#[test]
fn mutual_tls() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, true, &[]);
    let ca = pki.arg("ca.pem");
    let url = redis.url("127.0.0.1");

    // Without a client certificate the server refuses.
    let sidecar = Nearby::start(&["--primary", &url, "--tls-ca-file", &ca]);
    sidecar.expect_log(
        "WARN",
        "error=TLS: the server refused the session: received fatal alert: CertificateRequired",
    );
    let err = set_error(&sidecar);
    assert!(
        err.contains(&format!("127.0.0.1:{}", redis.port)),
        "error names the upstream: {err:?}"
    );
    drop(sidecar);

    // With one it works.
    let cert = pki.arg("client.pem");
    let key = pki.arg("client.key");
    let sidecar = Nearby::start(&[
        "--primary",
        &url,
        "--tls-ca-file",
        &ca,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    set_get(&sidecar, "tls:mtls", "mutual");
}

#[test]
fn unreadable_ca_file_is_named() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false, &[]);
    let missing = pki.path("missing-ca.pem");
    let missing = missing.to_string_lossy().into_owned();
    let url = redis.url("127.0.0.1");
    // Either the sidecar refuses to start, or it serves and every TLS
    // request fails; both name the file.
    match Nearby::try_start(&["--primary", &url, "--tls-ca-file", &missing]) {
        Err(log) => assert!(log.contains(&missing), "log names the file:\n{log}"),
        Ok(sidecar) => {
            let err = set_error(&sidecar);
            assert!(err.contains(&missing), "error names the file: {err:?}");
        }
    }
}

#[test]
fn replica_over_tls() {
    let pki = Pki::new();
    let primary = TlsRedis::start(&pki, false, &[]);
    let port = primary.port.to_string();
    let replica = TlsRedis::start(
        &pki,
        false,
        &[
            "--tls-replication",
            "yes",
            "--replicaof",
            "127.0.0.1",
            &port,
        ],
    );
    let linked = wait_until(Duration::from_secs(10), || {
        replica
            .cli(&pki, &["INFO", "replication"])
            .contains("master_link_status:up")
    });
    assert!(linked, "TLS replica did not link:\n{}", replica.log());

    let ca = pki.arg("ca.pem");
    let sidecar = Nearby::start(&[
        "--primary",
        &primary.url("127.0.0.1"),
        "--primary-region",
        "primary",
        "--replica",
        &format!("r1={}", replica.url("127.0.0.1")),
        "--tls-ca-file",
        &ca,
    ]);
    assert!(
        sidecar.wait_ready(Duration::from_secs(10)),
        "sidecar not ready:\n{}",
        sidecar.log()
    );
    let mut c = RawConn::connect(sidecar.port);
    assert_eq!(text(&c.cmd(&["SET", "tls:replicated", "both"])), "+OK\r\n");
    // Replication is asynchronous: wait until the replica has the key.
    let copied = wait_until(Duration::from_secs(10), || {
        replica.cli(&pki, &["GET", "tls:replicated"]) == "both"
    });
    assert!(copied, "the write did not replicate over TLS");
    // Reads reach the replica over TLS once the sidecar sees it healthy.
    replica.cli(&pki, &["CONFIG", "RESETSTAT"]);
    let served = wait_until(Duration::from_secs(10), || {
        let got = text(&c.cmd(&["GET", "tls:replicated"]));
        assert_eq!(got, "$4\r\nboth\r\n", "GET through the sidecar");
        replica
            .cli(&pki, &["INFO", "commandstats"])
            .contains("cmdstat_get:")
    });
    assert!(served, "no GET reached the TLS replica");
}
