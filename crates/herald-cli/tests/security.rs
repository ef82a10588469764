//! `herald serve --auth token` end to end through the CLI (and so the SDK over `herald://`):
//! `herald token create|list|revoke`, `--token` and `HERALD_TOKEN`, `herald whoami`, allowed and
//! refused commands per principal, a revoked token refused by a running server, and a server
//! that will not listen beyond loopback without authentication.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A CLI command with no ambient URL or token.
fn herald(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("HERALD_URL").env_remove("HERALD_TOKEN").env_remove("HERALD_DATA_DIR").args(args);
    c
}

fn output(mut c: Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = c.output().expect("running herald");
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn token(dir: &Path, name: &str, allow: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    for a in allow {
        args.extend(["--allow", a]);
    }
    let mut c = herald(&args);
    c.arg("--data-dir").arg(dir);
    let (ok, out, err) = output(c);
    assert!(ok, "token create failed: {err}");
    assert!(err.contains("shown only this once"), "{err}");
    out.trim().to_owned()
}

struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve --auth token` on `dir` with `extra` flags; returns it and its listening line.
fn spawn_serve(dir: &Path, extra: &[&std::ffi::OsStr]) -> (Serve, String) {
    let mut child = herald(&["serve", "--auth", "token", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning herald serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("herald serve printed its listening line");
    (Serve(child, String::new()), line)
}

fn serve(dir: &Path) -> Serve {
    let (mut server, line) = spawn_serve(dir, &[]);
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc://")).expect("a grpc address").to_owned();
    server.1 = format!("herald://{grpc}");
    server
}

/// A command against the server with `token` given as `--token` (or none).
fn with(url: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut c = herald(&["--url", url]);
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    c.args(args);
    output(c)
}

#[test]
fn tokens_are_made_used_and_revoked_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let admin = token(dir.path(), "admin", &["*:*"]);
    let api = token(dir.path(), "orders-api", &["publish:topic/orders"]);
    let billing = token(dir.path(), "billing", &["consume:topic/orders", "consume:group/billing"]);
    assert!(admin.starts_with("hrd_") && admin != api);
    let server = serve(dir.path());
    let url = server.1.as_str();

    // No token: refused, saying how to send one.
    let (ok, _, err) = with(url, None, &["topic", "list"]);
    assert!(!ok && err.contains("requires a token"), "{err}");
    let (ok, _, err) = with(url, Some("hrd_nope"), &["topic", "list"]);
    assert!(!ok && err.contains("not valid here"), "{err}");

    // Admin makes the topic; the producer publishes and may not delete; billing consumes.
    let (ok, _, err) = with(url, Some(&admin), &["topic", "create", "orders", "--partitions", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = with(url, Some(&api), &["publish", "orders", "--key", "k", "hello"]);
    assert!(ok, "{err}");
    let (ok, _, err) = with(url, Some(&api), &["topic", "delete", "orders"]);
    assert!(!ok && err.contains("may not administer topic \"orders\""), "{err}");
    let (ok, _, err) = with(url, Some(&billing), &["publish", "orders", "x"]);
    assert!(!ok && err.contains("may not publish to topic \"orders\""), "{err}");
    let (ok, out, err) = with(
        url,
        Some(&billing),
        &["--json", "consume", "orders", "--group", "billing", "--max", "1", "--wait-ms", "10000"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"hello\""), "{out}");
    let (ok, _, err) = with(url, Some(&billing), &["consume", "orders", "--group", "other", "--max", "1"]);
    assert!(!ok && err.contains("may not consume group \"other\""), "{err}");

    // whoami, by --token and by HERALD_TOKEN.
    let (ok, out, _) = with(url, Some(&api), &["whoami"]);
    assert!(ok && out.starts_with("orders-api") && out.contains("publish:topic/orders"), "{out}");
    let mut c = herald(&["--url", url, "--json", "whoami"]);
    c.env("HERALD_TOKEN", &billing);
    let (ok, out, err) = output(c);
    assert!(ok, "{err}");
    let me: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(me["principal"], "billing");

    // List never shows a token; revoke takes effect on the running server.
    let mut c = herald(&["--json", "token", "list", "--data-dir"]);
    c.arg(dir.path());
    let (ok, out, _) = output(c);
    assert!(ok && !out.contains(&api[20..]) && out.contains("orders-api"), "{out}");
    let mut c = herald(&["token", "revoke", "orders-api", "--data-dir"]);
    c.arg(dir.path());
    assert!(output(c).0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = with(url, Some(&api), &["whoami"]);
        if !ok {
            assert!(err.contains("revoked"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn serve_refuses_anonymous_access_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = herald(&["serve", "--http", "0.0.0.0:0", "--grpc", "127.0.0.1:0", "--data-dir"]);
    c.arg(dir.path()).env("HERALD_LOG", "warn");
    let (ok, _, err) = output(c);
    assert!(!ok, "started anonymously on 0.0.0.0");
    assert!(err.contains("--allow-anonymous") && err.contains("--auth token"), "{err}");
}

/// A CA, and a certificate for `localhost` and 127.0.0.1 it signed: (CA PEM, cert PEM, key PEM).
fn pki(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> (Serve, String, String) {
    let flags = ["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()];
    let (server, line) = spawn_serve(dir, &flags);
    let http = line.split_whitespace().find_map(|w| w.strip_prefix("https://")).expect("an https address").to_owned();
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpcs://")).expect("a grpcs address").to_owned();
    (server, http, grpc)
}

/// `GET /healthz` over TLS trusting `ca_pem`, as raw HTTP/1.1: the status line, or the error.
fn https_get(addr: &str, ca_pem: &str, path: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        Ok(String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned())
    })
}

#[test]
fn tls_serves_both_ports_refuses_plaintext_and_wrong_cas_and_rotates_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let admin = token(dir.path(), "admin", &["*:*"]);
    let (ca, cert, key) = pki("first");
    let (ca_path, cert_path, key_path) =
        (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&ca_path, &ca).unwrap();
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let (_server, http, grpc) = serve_tls(dir.path(), &cert_path, &key_path);
    let port = grpc.rsplit(':').next().unwrap();
    let url = format!("herald://localhost:{port}");

    // The SDK and CLI over TLS with a token.
    let mut c = herald(&["--url", &url, "--token", &admin, "--ca"]);
    c.arg(&ca_path).args(["topic", "create", "orders", "--partitions", "1"]);
    let (ok, _, err) = output(c);
    assert!(ok, "{err}");
    let mut c = herald(&["--url", &url, "--token", &admin, "--ca"]);
    c.arg(&ca_path).args(["whoami"]);
    let (ok, out, err) = output(c);
    assert!(ok && out.starts_with("admin"), "{out}{err}");
    // HTTP over TLS.
    assert_eq!(https_get(&http, &ca, "/healthz").unwrap(), "HTTP/1.1 200 OK");

    // Plaintext against the TLS ports: refused, saying why.
    let (ok, _, err) = with(&url, Some(&admin), &["whoami"]);
    assert!(!ok && err.contains("TLS"), "{err}");
    let mut plain = std::net::TcpStream::connect(&http).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut plain, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("TLS only"), "{answer}");

    // Another CA: not trusted, and said so.
    let (other_ca, _, _) = pki("other");
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_path, &other_ca).unwrap();
    let mut c = herald(&["--url", &url, "--token", &admin, "--ca"]);
    c.arg(&other_path).arg("whoami");
    let (ok, _, err) = output(c);
    assert!(!ok && err.contains("not trusted"), "{err}");
    assert!(https_get(&http, &other_ca, "/healthz").is_err());

    // Rotation: new files (from another CA) are served to new connections without a restart.
    let (ca2, cert2, key2) = pki("second");
    let ca2_path = dir.path().join("ca2.pem");
    std::fs::write(&ca2_path, &ca2).unwrap();
    std::fs::write(&key_path, &key2).unwrap();
    std::fs::write(&cert_path, &cert2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while https_get(&http, &ca2, "/healthz").is_err() {
        assert!(Instant::now() < deadline, "the renewed certificate was not served");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = herald(&["--url", &url, "--token", &admin, "--ca"]);
    c.arg(&ca2_path).arg("whoami");
    let (ok, _, err) = output(c);
    assert!(ok, "{err}");
    assert!(https_get(&http, &ca, "/healthz").is_err(), "the old certificate is no longer served");
}

/// `docs/security.md`'s five commands, run as written: only the data directory, `HOST` and the
/// ports are replaced, the certificate files are made beforehand (as the page assumes), and the
/// command that ends in `&` is started in the background and waited for.
#[test]
fn the_five_commands_of_the_security_page_work_as_written() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md")).unwrap();
    let section = page.split("## A server for several services, in five commands").nth(1).expect("the section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("its sh block");
    let commands: Vec<String> =
        block.replace("\\\n", " ").lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    assert_eq!(commands.len(), 5, "{commands:#?}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ca, cert, key) = pki("docs");
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (http, grpc) = (free(), free());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut server: Option<Serve> = None;
    let mut last = String::new();
    for c in &commands {
        let c = c
            .replace("/var/lib/herald", &data.display().to_string())
            .replace("HOST", "localhost")
            .replace(":7280", &format!(":{http}"))
            .replace(":7281", &format!(":{grpc}"));
        let mut sh = Command::new("sh");
        sh.current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("HERALD_URL")
            .env_remove("HERALD_TOKEN")
            .env_remove("HERALD_CA")
            .env("HERALD_LOG", "warn");
        if let Some(background) = c.strip_suffix('&') {
            let mut child = sh
                .args(["-c", &format!("exec {background}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let line = rx.recv_timeout(Duration::from_secs(20)).expect("the server started");
            assert!(line.contains("herald listening: https://"), "{line}");
            server = Some(Serve(child, String::new()));
            continue;
        }
        let out = sh.args(["-c", &c]).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "`{c}` failed:\n{stderr}\n{stdout}");
        last = stdout.into_owned();
    }
    assert!(server.is_some(), "no command started the server");
    assert!(last.starts_with("billing") && last.contains("consume:group/billing"), "{last}");
    assert!(std::fs::read_to_string(dir.path().join("admin.token")).unwrap().starts_with("hrd_"));
}
