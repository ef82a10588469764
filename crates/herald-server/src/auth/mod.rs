//! Who may do what: authentication (API tokens), authorization (permissions on topic and group
//! names), the failed-authentication limit per source address, and the Host/Origin check that
//! stops DNS rebinding against a loopback server. Both APIs ask [`Guard`] who is calling and then
//! [`Principal::check`] whether it may; nothing else decides either.
//!
//! - `grants.rs`: permissions (`publish:orders.*`), [`Principal`], [`Denied`];
//! - `tokens.rs`: the token file (`herald token …`) and checking a token against it.
//!
//! Modes (`[auth] mode`): `none` — every caller is `anonymous` and may do everything, which a
//! server accepts only on loopback unless `allow_anonymous` says otherwise; `token` — every
//! request needs `Authorization: Bearer <token>` (gRPC: `authorization` metadata) and may do what
//! its token's permissions allow, nothing else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use herald_model::Code;
use serde::{Deserialize, Serialize};

pub mod grants;
pub mod owners;
pub mod quotas;
pub mod tokens;

pub use grants::{Action, Denied, Permission, Principal, Resource};

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Nobody is asked: every caller may do everything (loopback only, unless
    /// `allow_anonymous`).
    #[default]
    None,
    /// API tokens (`herald token create`), with their permissions.
    Token,
}

/// `[auth]` in the server's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` or `token`.
    pub mode: AuthMode,
    /// Lets a server without authentication listen on an address other than loopback (anyone
    /// who reaches it may do everything): it then warns at start and every minute.
    pub allow_anonymous: bool,
    /// Host names (without port) a loopback server answers besides `localhost`, `127.0.0.1`
    /// and `::1` (e.g. the name a local proxy forwards); any other `Host` or `Origin` is refused,
    /// so that a web page cannot reach the server through DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Failed authentications one source address may make per minute; beyond, its requests are
    /// refused with `quota_exceeded` without looking at their token until the minute is over.
    pub failures_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { mode: AuthMode::None, allow_anonymous: false, allowed_hosts: Vec::new(), failures_per_minute: 60 }
    }
}

/// Source addresses tracked for failed authentications at most; when full, the oldest window
/// goes first.
pub const FAILURE_ADDRESSES_MAX: usize = 65_536;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Failed authentications per source address, in fixed one-minute windows.
struct Failures {
    per_minute: u32,
    by_addr: HashMap<IpAddr, (Instant, u32)>,
}

impl Failures {
    /// `Some(seconds to wait)` when `addr` used up its failures.
    fn blocked(&mut self, addr: IpAddr, now: Instant) -> Option<u64> {
        let (start, n) = *self.by_addr.get(&addr)?;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= FAILURE_WINDOW {
            self.by_addr.remove(&addr);
            return None;
        }
        (n >= self.per_minute).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn record(&mut self, addr: IpAddr, now: Instant) {
        if self.by_addr.len() >= FAILURE_ADDRESSES_MAX && !self.by_addr.contains_key(&addr) {
            self.by_addr.retain(|_, (start, _)| now.saturating_duration_since(*start) < FAILURE_WINDOW);
            if self.by_addr.len() >= FAILURE_ADDRESSES_MAX
                && let Some(oldest) = self.by_addr.iter().min_by_key(|(_, (s, _))| *s).map(|(a, _)| *a)
            {
                self.by_addr.remove(&oldest);
            }
        }
        let e = self.by_addr.entry(addr).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= FAILURE_WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

/// Authenticates requests for both APIs.
pub struct Guard {
    config: AuthConfig,
    data_dir: PathBuf,
    tokens: RwLock<Arc<tokens::Tokens>>,
    /// The token file's modification time and length when last loaded.
    seen: Mutex<Option<(std::time::SystemTime, u64)>>,
    failures: Mutex<Failures>,
    /// Whether the HTTP listener is on loopback (the Host/Origin check applies).
    loopback_http: bool,
    /// What principals with quotas have used.
    pub meter: Arc<quotas::Meter>,
    /// Who created which topic, for the topic and partition quotas.
    pub owners: Arc<owners::Owners>,
}

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Guard {
    /// Loads the tokens (mode `token`) and checks that the listeners fit the mode.
    pub fn new(config: &AuthConfig, data_dir: PathBuf, http: SocketAddr, grpc: SocketAddr) -> Result<Guard, String> {
        let exposed: Vec<SocketAddr> = [http, grpc].into_iter().filter(|a| !a.ip().is_loopback()).collect();
        if config.mode == AuthMode::None && !exposed.is_empty() && !config.allow_anonymous {
            return Err(format!(
                "refusing to listen on {} without authentication: anyone who reaches it could delete topics and \
                 read every event. Turn authentication on (--auth token, and make a token with `herald token \
                 create --data-dir {} --name admin --allow '*:*'`), listen on loopback only, or say \
                 --allow-anonymous if this network is trusted",
                exposed.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and "),
                data_dir.display()
            ));
        }
        if config.failures_per_minute == 0 {
            return Err("[auth] failures_per_minute is 0; allow at least 1 failed authentication per minute".into());
        }
        let path = data_dir.join(tokens::TOKENS_FILE);
        let seen = file_stamp(&path);
        let data_dir_for_owners = data_dir.clone();
        let loaded = match config.mode {
            AuthMode::Token => tokens::Tokens::load(&data_dir).map_err(|e| format!("loading tokens: {e}"))?,
            AuthMode::None => tokens::Tokens::default(),
        };
        Ok(Guard {
            config: config.clone(),
            data_dir,
            tokens: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
            failures: Mutex::new(Failures { per_minute: config.failures_per_minute, by_addr: HashMap::new() }),
            loopback_http: http.ip().is_loopback(),
            meter: Arc::new(quotas::Meter::default()),
            owners: Arc::new(owners::Owners::load(&data_dir_for_owners)?),
        })
    }

    /// The mode in force.
    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    /// Whether anonymous access is served on an address other than loopback.
    pub fn exposed_anonymously(&self, addrs: &[SocketAddr]) -> bool {
        self.config.mode == AuthMode::None && addrs.iter().any(|a| !a.ip().is_loopback())
    }

    /// Live tokens loaded.
    pub fn live_tokens(&self) -> usize {
        self.tokens.read().expect("tokens lock poisoned").live()
    }

    /// Re-reads the token file when it changed since the last load (and audits the tokens made
    /// and revoked meanwhile); a file that cannot be read keeps the tokens loaded before (and says
    /// why).
    pub fn reload_if_changed(&self, audit: &crate::audit::Audit) {
        if self.config.mode != AuthMode::Token {
            return;
        }
        let stamp = file_stamp(&self.data_dir.join(tokens::TOKENS_FILE));
        let mut seen = self.seen.lock().expect("token stamp lock poisoned");
        if *seen == stamp {
            return;
        }
        match tokens::Tokens::load(&self.data_dir) {
            Ok(t) => {
                tracing::info!(live = t.live(), "token file changed: reloaded");
                let old = self.tokens.read().expect("tokens lock poisoned").clone();
                let (before, after) = (old.states(), t.states());
                for (id, (name, revoked)) in &after {
                    let target = format!("token/{name}");
                    match before.get(id) {
                        None => {
                            audit.record("-", None, "server", "token_created", &target, "ok");
                            if *revoked {
                                audit.record("-", None, "server", "token_revoked", &target, "ok");
                            }
                        }
                        Some((_, false)) if *revoked => {
                            audit.record("-", None, "server", "token_revoked", &target, "ok")
                        }
                        _ => {}
                    }
                }
                *self.tokens.write().expect("tokens lock poisoned") = Arc::new(t);
                *seen = stamp;
            }
            Err(e) => {
                // Said once per change of the file, not every second.
                *seen = stamp;
                tracing::error!(error = %e, "token file changed but cannot be loaded; the tokens loaded before stay")
            }
        }
    }

    /// Whether `p`'s token still works: long-lived streams ask now and then, so that a revoked
    /// or expired token does not keep a subscription going.
    pub fn still_valid(&self, p: &Principal) -> Result<(), Denied> {
        if self.config.mode == AuthMode::None {
            return Ok(());
        }
        self.tokens.read().expect("tokens lock poisoned").still_valid(p, tokens::now_ms())
    }

    /// Who sends a request with this `Authorization` value (`Bearer <token>`) from `peer`.
    pub fn authenticate(&self, authorization: Option<&[u8]>, peer: Option<IpAddr>) -> Result<Principal, Denied> {
        if self.config.mode == AuthMode::None {
            return Ok(Principal::anonymous());
        }
        let now = Instant::now();
        // IPv6 by /64: one host holds a whole /64. Without a known peer nothing is limited.
        let addr = peer.map(|ip| match ip {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            v4 => v4,
        });
        let blocked = addr.and_then(|a| self.failures.lock().expect("failures lock poisoned").blocked(a, now));
        let result = match authorization {
            None => Err(Denied::new(
                Code::Unauthenticated,
                "this server requires a token: send `Authorization: Bearer <token>` (gRPC: `authorization` \
                 metadata; the CLI and SDK read HERALD_TOKEN)",
            )),
            Some(value) => match std::str::from_utf8(value).ok().and_then(|v| v.strip_prefix("Bearer ")) {
                Some(token) => {
                    let tokens = self.tokens.read().expect("tokens lock poisoned").clone();
                    tokens.authenticate(token.trim(), tokens::now_ms())
                }
                None => Err(Denied::new(
                    Code::Unauthenticated,
                    "the Authorization header is not `Bearer <token>`; send the token that way",
                )),
            },
        };
        match (&result, blocked, addr) {
            // A valid token passes even from a blocked address: others sharing it (NAT, a proxy)
            // are not locked out by someone's guesses.
            (Ok(_), _, _) => {}
            (Err(_), Some(wait), Some(a)) => {
                metrics::counter!("herald_server_auth_failures_total").increment(1);
                return Err(Denied {
                    code: Code::QuotaExceeded,
                    message: format!(
                        "too many failed authentications from {a} (more than {} a minute); retry in {wait} s with a \
                         valid token",
                        self.config.failures_per_minute
                    ),
                    retry_after_s: Some(wait),
                });
            }
            (Err(_), _, a) => {
                if let Some(a) = a {
                    self.failures.lock().expect("failures lock poisoned").record(a, now);
                }
                metrics::counter!("herald_server_auth_failures_total").increment(1);
            }
        }
        result
    }

    /// On a loopback listener, refuses a `Host` or `Origin` that names another machine: a web
    /// page whose name was rebound to 127.0.0.1 must not reach the server.
    pub fn check_host(&self, host: Option<&[u8]>, origin: Option<&[u8]>) -> Result<(), Denied> {
        if !self.loopback_http {
            return Ok(());
        }
        let refuse = |what: &str, value: &[u8]| {
            Denied::new(
                Code::PermissionDenied,
                format!(
                    "{what} {:?} does not name this loopback server; requests must come for localhost, 127.0.0.1 or \
                     [::1] (a page on another site cannot call it). Behind a local proxy, add its name to [auth] \
                     allowed_hosts",
                    String::from_utf8_lossy(value)
                ),
            )
        };
        if let Some(h) = host
            && !self.local_name(host_part(h))
        {
            return Err(refuse("Host", h));
        }
        if let Some(o) = origin {
            // `null` (a sandboxed page, a file) is as foreign as any other site.
            let rest = o.strip_prefix(b"http://").or_else(|| o.strip_prefix(b"https://"));
            if !rest.is_some_and(|r| self.local_name(host_part(r))) {
                return Err(refuse("Origin", o));
            }
        }
        Ok(())
    }

    fn local_name(&self, name: &[u8]) -> bool {
        let Ok(name) = std::str::from_utf8(name) else { return false };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.config.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// The host of `host[:port]` or `[v6]:port` (or of an origin's `host[:port][/…]`).
fn host_part(v: &[u8]) -> &[u8] {
    let v = v.split(|&b| b == b'/').next().unwrap_or_default();
    if v.first() == Some(&b'[') {
        return v.iter().position(|&b| b == b']').map_or(v, |end| &v[..=end]);
    }
    match v.iter().rposition(|&b| b == b':') {
        Some(colon) => &v[..colon],
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(mode: AuthMode, dir: &std::path::Path) -> Guard {
        let config = AuthConfig { mode, failures_per_minute: 3, ..AuthConfig::default() };
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        Guard::new(&config, dir.to_owned(), lo, lo).unwrap()
    }

    #[test]
    fn anonymous_access_stays_on_loopback_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let any = SocketAddr::from(([0, 0, 0, 0], 7280));
        let lo = SocketAddr::from(([127, 0, 0, 1], 7281));
        let e = Guard::new(&AuthConfig::default(), dir.path().into(), any, lo).err().expect("refused");
        assert!(e.contains("--allow-anonymous") && e.contains("0.0.0.0:7280"), "{e}");
        let allowed = AuthConfig { allow_anonymous: true, ..AuthConfig::default() };
        assert!(Guard::new(&allowed, dir.path().into(), any, lo).is_ok());
        let token = AuthConfig { mode: AuthMode::Token, ..AuthConfig::default() };
        assert!(Guard::new(&token, dir.path().into(), any, any).is_ok());
    }

    #[test]
    fn failures_are_limited_per_address_and_others_are_unaffected() {
        let dir = tempfile::tempdir().unwrap();
        let made = tokens::create(dir.path(), "ops", &["*:*".into()], None).unwrap();
        let g = guard(AuthMode::Token, dir.path());
        let attacker = Some(IpAddr::from([127, 0, 0, 2]));
        let good = format!("Bearer {}", made.token);
        for _ in 0..3 {
            assert_eq!(g.authenticate(Some(b"Bearer nope"), attacker).unwrap_err().code, Code::Unauthenticated);
        }
        // Blocked now: guesses get quota_exceeded; a valid token still passes (others behind the
        // same address are not locked out), and another address is not affected.
        let e = g.authenticate(Some(b"Bearer nope"), attacker).unwrap_err();
        assert_eq!(e.code, Code::QuotaExceeded);
        assert!(e.retry_after_s.is_some_and(|s| (1..=60).contains(&s)), "{e:?}");
        assert!(g.authenticate(Some(good.as_bytes()), attacker).is_ok());
        assert!(g.authenticate(Some(good.as_bytes()), Some(IpAddr::from([127, 0, 0, 1]))).is_ok());
        // IPv6 addresses count by /64; an unknown peer is not limited.
        let v6 = |last: u16| Some(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]));
        for i in 0..3 {
            let _ = g.authenticate(Some(b"Bearer nope"), v6(i));
        }
        assert_eq!(g.authenticate(Some(b"Bearer nope"), v6(99)).unwrap_err().code, Code::QuotaExceeded);
        for _ in 0..10 {
            assert_eq!(g.authenticate(Some(b"Bearer nope"), None).unwrap_err().code, Code::Unauthenticated);
        }
        assert_eq!(g.authenticate(None, Some(IpAddr::from([127, 0, 0, 3]))).unwrap_err().code, Code::Unauthenticated);
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let mut f = Failures { per_minute: 1, by_addr: HashMap::new() };
        let now = Instant::now();
        for i in 0..(FAILURE_ADDRESSES_MAX as u32 + 10) {
            f.record(IpAddr::from(i.to_be_bytes()), now);
        }
        assert_eq!(f.by_addr.len(), FAILURE_ADDRESSES_MAX);
    }

    #[test]
    fn revoking_takes_effect_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let made = tokens::create(dir.path(), "ops", &["*:*".into()], None).unwrap();
        let g = guard(AuthMode::Token, dir.path());
        let header = format!("Bearer {}", made.token);
        assert!(g.authenticate(Some(header.as_bytes()), None).is_ok());
        tokens::revoke(dir.path(), "ops").unwrap();
        g.reload_if_changed(&crate::audit::Audit::detached());
        assert_eq!(g.authenticate(Some(header.as_bytes()), None).unwrap_err().code, Code::Unauthenticated);
    }

    #[test]
    fn hosts_and_origins_of_other_sites_are_refused_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let g = guard(AuthMode::None, dir.path());
        for ok in ["localhost:7280", "127.0.0.1:7280", "[::1]:7280", "LOCALHOST", "127.0.0.1"] {
            assert!(g.check_host(Some(ok.as_bytes()), None).is_ok(), "{ok}");
        }
        for bad in ["attacker.example", "attacker.example:7280", "127.0.0.1.nip.io", "localhost.attacker.example"] {
            let e = g.check_host(Some(bad.as_bytes()), None).unwrap_err();
            assert_eq!(e.code, Code::PermissionDenied, "{bad}");
        }
        assert!(g.check_host(None, Some(b"http://localhost:3000")).is_ok());
        for bad in ["http://attacker.example", "null", "https://evil.example:443"] {
            assert!(g.check_host(Some(b"localhost"), Some(bad.as_bytes())).is_err(), "{bad}");
        }
    }
}
