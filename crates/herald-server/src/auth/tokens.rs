//! API tokens: made by `herald token create` (shown once), stored only as a SHA-256 hash in
//! `<data_dir>/auth/tokens.json` (a versioned file, written durably, mode 0600), listed and
//! revoked by name; a running server re-reads the file when it changes.
//!
//! A token is `hrd_<id>_<secret>`: `id` (16 hex digits) finds its record, `secret` (64 hex
//! digits, 256 random bits) is checked against the stored hash in constant time.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_model::Code;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::grants::{Denied, Permission, Principal};
use super::quotas::Quotas;

/// The token file, relative to the data directory.
pub const TOKENS_FILE: &str = "auth/tokens.json";
/// The token file's format this build writes (and the newest it reads).
const FORMAT: u32 = 1;
/// Most tokens in one file.
pub const TOKENS_MAX: usize = 10_000;
/// Most permissions on one token.
pub const PERMISSIONS_PER_TOKEN_MAX: usize = 256;
/// Longest token name.
const NAME_BYTES_MAX: usize = 128;
const PREFIX: &str = "hrd_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a token file this build can read.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The request is invalid (a name, a permission, a limit).
    #[error("{0}")]
    Invalid(String),
}

/// One token as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public part of the token, which finds its record.
    pub id: String,
    /// Who it stands for: the principal's name in permissions' refusals and the audit.
    pub name: String,
    /// SHA-256 of the secret part, hex.
    pub secret_sha256: String,
    /// Permissions, as written (`publish:orders.*`, …).
    pub permissions: Vec<String>,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it stops working, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// When it was revoked, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
    /// Its quotas (none: not limited).
    #[serde(default, skip_serializing_if = "Quotas::is_empty")]
    pub quotas: Quotas,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    #[serde(default)]
    format: u32,
    tokens: Vec<TokenRecord>,
}

/// A token just made: the token (shown once) and its record.
#[derive(Debug)]
pub struct NewToken {
    /// `hrd_<id>_<secret>`: give it to the client; it is not stored anywhere.
    pub token: String,
    /// What was stored.
    pub record: TokenRecord,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

fn path_of(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKENS_FILE)
}

fn read_file(path: &Path) -> Result<TokenFile, TokenError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::default()),
        Err(source) => return Err(TokenError::Io { path: path.to_owned(), source }),
    };
    let file: TokenFile = serde_json::from_str(&text)
        .map_err(|e| TokenError::Format { path: path.to_owned(), message: format!("not a token file: {e}") })?;
    if file.format > FORMAT {
        return Err(TokenError::Format {
            path: path.to_owned(),
            message: format!(
                "written in token file format {} by a newer Herald; this build reads up to {FORMAT}: upgrade Herald",
                file.format
            ),
        });
    }
    Ok(file)
}

/// Writes the file durably: a temporary file, fsynced, renamed over the old one, the directory
/// fsynced; readable by its owner only.
fn write_file(path: &Path, file: &TokenFile) -> Result<(), TokenError> {
    let io = |source| TokenError::Io { path: path.to_owned(), source };
    let dir = path.parent().expect("the token file has a directory");
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(".tokens.json.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(io)?;
    let text = serde_json::to_vec_pretty(file).expect("token records serialise");
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Runs `f` on the token file under an exclusive lock (two `herald token` commands at once
/// cannot lose each other's change), and writes what it leaves.
fn update<T>(data_dir: &Path, f: impl FnOnce(&mut TokenFile) -> Result<T, TokenError>) -> Result<T, TokenError> {
    let path = path_of(data_dir);
    let dir = path.parent().expect("the token file has a directory");
    let io = |source| TokenError::Io { path: dir.to_owned(), source };
    fs::create_dir_all(dir).map_err(io)?;
    let lock =
        fs::OpenOptions::new().write(true).create(true).truncate(false).open(dir.join("tokens.lock")).map_err(io)?;
    lock.lock().map_err(io)?;
    let mut file = read_file(&path)?;
    let out = f(&mut file)?;
    file.format = FORMAT;
    write_file(&path, &file)?;
    Ok(out)
}

/// Makes a token named `name` with `permissions`, valid for `valid_for` (or until revoked).
pub fn create(
    data_dir: &Path,
    name: &str,
    permissions: &[String],
    valid_for: Option<Duration>,
) -> Result<NewToken, TokenError> {
    create_with(data_dir, name, permissions, valid_for, Quotas::default())
}

/// [`create`] with quotas.
pub fn create_with(
    data_dir: &Path,
    name: &str,
    permissions: &[String],
    valid_for: Option<Duration>,
    quotas: Quotas,
) -> Result<NewToken, TokenError> {
    quotas.validate().map_err(TokenError::Invalid)?;
    let name_ok = |b: u8| b.is_ascii_alphanumeric() || b"._-@".contains(&b);
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.bytes().all(name_ok) {
        return Err(TokenError::Invalid(format!(
            "token name {name:?}: use 1 to {NAME_BYTES_MAX} letters, digits, '.', '_', '-' or '@' (it names the principal)"
        )));
    }
    if permissions.len() > PERMISSIONS_PER_TOKEN_MAX {
        return Err(TokenError::Invalid(format!(
            "{} permissions; a token holds at most {PERMISSIONS_PER_TOKEN_MAX}: use patterns",
            permissions.len()
        )));
    }
    for p in permissions {
        Permission::parse(p).map_err(TokenError::Invalid)?;
    }
    let id = hex(&rand::random::<[u8; ID_HEX / 2]>());
    let secret = hex(&rand::random::<[u8; SECRET_HEX / 2]>());
    let created_ms = now_ms();
    let record = TokenRecord {
        id: id.clone(),
        name: name.to_owned(),
        secret_sha256: sha256_hex(&secret),
        permissions: permissions.to_vec(),
        created_ms,
        expires_ms: valid_for.map(|d| created_ms.saturating_add(d.as_millis() as u64)),
        revoked_ms: None,
        quotas,
    };
    let stored = record.clone();
    update(data_dir, move |file| {
        if file.tokens.iter().any(|t| t.name == stored.name && t.revoked_ms.is_none()) {
            return Err(TokenError::Invalid(format!(
                "a token named {:?} exists; revoke it first (herald token revoke {}) or pick another name",
                stored.name, stored.name
            )));
        }
        if file.tokens.len() >= TOKENS_MAX {
            return Err(TokenError::Invalid(format!(
                "the token file holds {TOKENS_MAX} tokens, its limit; remove revoked ones (herald token prune)"
            )));
        }
        file.tokens.push(stored);
        Ok(())
    })?;
    Ok(NewToken { token: format!("{PREFIX}{id}_{secret}"), record })
}

/// Every token record, revoked and expired ones included.
pub fn list(data_dir: &Path) -> Result<Vec<TokenRecord>, TokenError> {
    Ok(read_file(&path_of(data_dir))?.tokens)
}

/// Revokes the live token named `name_or_id` (or with that id); returns its record.
pub fn revoke(data_dir: &Path, name_or_id: &str) -> Result<TokenRecord, TokenError> {
    update(data_dir, |file| {
        let t = file
            .tokens
            .iter_mut()
            .find(|t| t.revoked_ms.is_none() && (t.name == name_or_id || t.id == name_or_id))
            .ok_or_else(|| TokenError::Invalid(format!("no live token named {name_or_id:?} (herald token list)")))?;
        t.revoked_ms = Some(now_ms());
        Ok(t.clone())
    })
}

/// Removes revoked and expired records; returns how many.
pub fn prune(data_dir: &Path) -> Result<usize, TokenError> {
    let now = now_ms();
    update(data_dir, |file| {
        let before = file.tokens.len();
        file.tokens.retain(|t| t.revoked_ms.is_none() && t.expires_ms.is_none_or(|e| e > now));
        Ok(before - file.tokens.len())
    })
}

struct Live {
    secret_sha256: [u8; 32],
    principal: Principal,
    revoked: bool,
}

/// The tokens a server accepts, as loaded from the file.
#[derive(Default)]
pub struct Tokens {
    by_id: HashMap<String, Live>,
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Loads `<data_dir>/auth/tokens.json` (none there: no tokens).
    pub fn load(data_dir: &Path) -> Result<Tokens, TokenError> {
        let path = path_of(data_dir);
        let file = read_file(&path)?;
        let mut by_id = HashMap::new();
        for t in file.tokens {
            let bad =
                |m: String| TokenError::Format { path: path.clone(), message: format!("token {:?}: {m}", t.name) };
            let permissions =
                t.permissions.iter().map(|p| Permission::parse(p)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
            let secret_sha256 =
                unhex32(&t.secret_sha256).ok_or_else(|| bad("secret_sha256 is not 64 hex digits".into()))?;
            let mut principal = Principal::new(&t.name, permissions, t.expires_ms);
            principal.quotas = t.quotas;
            principal.token_id = Some(t.id.as_str().into());
            by_id.insert(t.id, Live { secret_sha256, principal, revoked: t.revoked_ms.is_some() });
        }
        Ok(Tokens { by_id })
    }

    /// Each token's name and whether it is revoked, by id.
    pub fn states(&self) -> HashMap<&str, (&str, bool)> {
        self.by_id.iter().map(|(id, l)| (id.as_str(), (&*l.principal.name, l.revoked))).collect()
    }

    /// Whether the token `p` authenticated with still works (not revoked, not expired, still in
    /// the file).
    pub fn still_valid(&self, p: &Principal, now_ms: u64) -> Result<(), Denied> {
        let Some(id) = &p.token_id else { return Ok(()) };
        let ended = |why: &str| {
            Denied::new(
                Code::Unauthenticated,
                format!("the token {:?} {why}; the stream ends: ask for a new one", p.name),
            )
        };
        match self.by_id.get(&**id) {
            None => Err(ended("was removed")),
            Some(l) if l.revoked => Err(ended("was revoked")),
            Some(l) if l.principal.expires_ms.is_some_and(|e| e <= now_ms) => Err(ended("has expired")),
            Some(_) => Ok(()),
        }
    }

    /// How many tokens can be used (not revoked; expired ones count until pruned).
    pub fn live(&self) -> usize {
        self.by_id.values().filter(|l| !l.revoked).count()
    }

    /// The principal of `token`, or why not. Every failure says the same thing, so that a guess
    /// learns nothing about which part was wrong, except for an expired or revoked token,
    /// whose holder needs to know it must get a new one.
    pub fn authenticate(&self, token: &str, now_ms: u64) -> Result<Principal, Denied> {
        let wrong = || {
            Denied::new(
                Code::Unauthenticated,
                "the token is not valid here; send a token made by `herald token create` for this server",
            )
        };
        let rest = token.strip_prefix(PREFIX).ok_or_else(wrong)?;
        let (id, secret) = rest.split_once('_').ok_or_else(wrong)?;
        if id.len() != ID_HEX || secret.len() != SECRET_HEX {
            return Err(wrong());
        }
        // Hashed before the lookup: an unknown id costs what a wrong secret does.
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let live = self.by_id.get(id).ok_or_else(wrong)?;
        if !bool::from(hash.ct_eq(&live.secret_sha256)) {
            return Err(wrong());
        }
        if live.revoked {
            return Err(Denied::new(
                Code::Unauthenticated,
                format!("the token {:?} was revoked; ask for a new one", live.principal.name),
            ));
        }
        if live.principal.expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(Denied::new(
                Code::Unauthenticated,
                format!("the token {:?} has expired; ask for a new one", live.principal.name),
            ));
        }
        Ok(live.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_hashed_and_authenticates_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(dir.path(), "billing", &["consume:orders".into()], None).unwrap();
        let text = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        let secret = made.token.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "the secret is not stored");
        assert!(text.contains("\"format\": 1"));
        let tokens = Tokens::load(dir.path()).unwrap();
        let p = tokens.authenticate(&made.token, now_ms()).unwrap();
        assert_eq!(&*p.name, "billing");
        // One character off, a wrong id, garbage: all the same answer.
        let mut wrong = made.token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        for bad in [wrong.as_str(), "hrd_0000000000000000_00", "Bearer x", ""] {
            let e = tokens.authenticate(bad, now_ms()).unwrap_err();
            assert_eq!(e.code, Code::Unauthenticated);
            assert!(e.message.contains("not valid here"), "{bad}: {}", e.message);
        }
        assert!(create(dir.path(), "billing", &[], None).is_err(), "one live token per name");
        revoke(dir.path(), "billing").unwrap();
        let e = Tokens::load(dir.path()).unwrap().authenticate(&made.token, now_ms()).unwrap_err();
        assert!(e.message.contains("revoked"), "{}", e.message);
        assert_eq!(prune(dir.path()).unwrap(), 1);
        assert!(list(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn expired_tokens_are_refused_and_bad_input_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(dir.path(), "short", &[], Some(Duration::from_secs(60))).unwrap();
        let tokens = Tokens::load(dir.path()).unwrap();
        assert!(tokens.authenticate(&made.token, now_ms()).is_ok());
        let e = tokens.authenticate(&made.token, now_ms() + 61_000).unwrap_err();
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(create(dir.path(), "bad name", &[], None).is_err());
        assert!(create(dir.path(), "x", &["fly:orders".into()], None).is_err());
        let many: Vec<String> = (0..=PERMISSIONS_PER_TOKEN_MAX).map(|i| format!("publish:t{i}")).collect();
        assert!(create(dir.path(), "many", &many, None).is_err());
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_file_from_a_newer_herald_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("auth")).unwrap();
        fs::write(dir.path().join(TOKENS_FILE), r#"{"format": 9, "tokens": []}"#).unwrap();
        let e = Tokens::load(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("upgrade Herald"), "{e}");
    }
}
