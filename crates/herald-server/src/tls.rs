//! TLS for both listeners (rustls, ring): a PEM certificate chain and key from `[tls]`, re-read
//! when either file changes (a renewed certificate is served to new connections within a
//! second, without a restart; a pair that does not load keeps the previous one and says why).
//! With `[tls]` set, both ports speak TLS only: a plaintext HTTP request gets a plain-text 400
//! saying so, a plaintext gRPC client is closed at once (its SDK error says to use TLS).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// `[tls]` in the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's certificate first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Which listener a handshake is for: the protocols offered by ALPN.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener {
    Http,
    Grpc,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The loaded certificate, for both listeners.
pub(crate) struct Tls {
    files: TlsConfig,
    seen: Mutex<(Stamp, Stamp)>,
    /// (HTTP: h2 and http/1.1; gRPC: h2 only).
    current: RwLock<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>,
}

fn load(files: &TlsConfig) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the certificate chain {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("reading the private key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let build = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, String> {
        let mut c = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                format!("the key {} does not fit the certificate {}: {e}", files.key.display(), files.cert.display())
            })?;
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(c))
    };
    Ok((build(&[b"h2", b"http/1.1"])?, build(&[b"h2"])?))
}

impl Tls {
    /// Loads the pair, or says what is wrong with it.
    pub(crate) fn new(files: &TlsConfig) -> Result<Tls, String> {
        let configs = load(files)?;
        Ok(Tls {
            seen: Mutex::new((stamp(&files.cert), stamp(&files.key))),
            files: files.clone(),
            current: RwLock::new(configs),
        })
    }

    /// The acceptor for a new connection, with the certificate loaded last.
    pub(crate) fn acceptor(&self, listener: Listener) -> TlsAcceptor {
        let c = self.current.read().expect("tls lock poisoned");
        TlsAcceptor::from(match listener {
            Listener::Http => c.0.clone(),
            Listener::Grpc => c.1.clone(),
        })
    }

    /// Loads the pair again when a file changed since the last load.
    pub(crate) fn reload_if_changed(&self) {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        let mut seen = self.seen.lock().expect("tls stamp lock poisoned");
        if *seen == now {
            return;
        }
        match load(&self.files) {
            Ok(configs) => {
                *self.current.write().expect("tls lock poisoned") = configs;
                *seen = now;
                tracing::info!(cert = %self.files.cert.display(), "certificate files changed: reloaded");
            }
            // A half-written pair (the certificate renewed, the key not yet): the next change of
            // either file tries again; said once per change, not every second.
            Err(e) => {
                *seen = now;
                tracing::warn!(error = %e, "certificate files changed but do not load; serving the previous pair")
            }
        }
    }
}

/// Whether `first` (a connection's first byte) can start a TLS handshake (a handshake record).
pub(crate) fn looks_like_tls(first: u8) -> bool {
    first == 0x16
}

/// What a plaintext HTTP request to a TLS port is answered.
pub(crate) fn plaintext_answer() -> Vec<u8> {
    let body = "this port speaks TLS only: use https:// (and the server's CA, e.g. --ca)\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
