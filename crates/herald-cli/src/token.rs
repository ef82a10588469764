//! `herald token …` (API tokens, kept in a server's data directory: a running server picks a
//! change up within a second) and `herald whoami`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use herald_server::auth::tokens;

use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Makes a token and prints it once (only its hash is stored).
    #[command(after_long_help = "Permissions are ACTION:PATTERN. ACTION: publish, consume, admin, dlq or *.
PATTERN: topic/NAME, group/NAME, NAME (topics and groups of that name) or * (everything, the server
too); '*' inside a NAME stands for any characters.

Examples:
  herald token create --name admin --allow '*:*'
  herald token create --name orders-api --allow 'publish:topic/orders.*'
  herald token create --name billing --allow consume:topic/orders --allow consume:group/billing \\
      --allow dlq:group/billing --expires 90d")]
    Create {
        /// Who the token stands for (its principal's name).
        #[arg(long)]
        name: String,
        /// A permission (repeat for more); none: the token can only ask `whoami`.
        #[arg(long = "allow", value_name = "ACTION:PATTERN")]
        permissions: Vec<String>,
        /// Stops working after this long (e.g. 30d, 12h, 90m); default: until revoked.
        #[arg(long, value_parser = parse_validity)]
        expires: Option<Duration>,
        /// Quota: events it may publish per second (a second's worth may come at once).
        #[arg(long)]
        publish_rate: Option<u64>,
        /// Quota: event bytes it may publish per second.
        #[arg(long)]
        publish_bytes_rate: Option<u64>,
        /// Quota: subscription streams it may hold open at once.
        #[arg(long)]
        max_subscriptions: Option<u32>,
        /// Quota: connections it may hold open at once (HTTP and gRPC).
        #[arg(long)]
        max_connections: Option<u32>,
        /// Quota: topics it may have created (that exist at once).
        #[arg(long)]
        max_topics: Option<u32>,
        /// Quota: partitions of the topics it created, together.
        #[arg(long)]
        max_partitions: Option<u32>,
        /// The server's data directory.
        #[arg(long, env = "HERALD_DATA_DIR", default_value = "./herald-data")]
        data_dir: PathBuf,
    },
    /// Lists tokens (names, permissions, expiry; never the tokens).
    List {
        /// The server's data directory.
        #[arg(long, env = "HERALD_DATA_DIR", default_value = "./herald-data")]
        data_dir: PathBuf,
    },
    /// Revokes a token by name (or id): refused from then on (a running server: within a second).
    Revoke {
        /// The token's name or id.
        name: String,
        /// The server's data directory.
        #[arg(long, env = "HERALD_DATA_DIR", default_value = "./herald-data")]
        data_dir: PathBuf,
    },
    /// Removes revoked and expired tokens from the file.
    Prune {
        /// The server's data directory.
        #[arg(long, env = "HERALD_DATA_DIR", default_value = "./herald-data")]
        data_dir: PathBuf,
    },
}

/// `30d`, `12h`, `90m`, `45s`.
fn parse_validity(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: write a whole number and a unit, e.g. 30d, 12h, 90m"))?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => return Err(format!("{s:?}: the unit must be d, h, m or s")),
    };
    match secs {
        Some(s) if s > 0 && s <= 10 * 365 * 86_400 => Ok(Duration::from_secs(s)),
        _ => Err(format!("{s:?}: between 1s and 10 years")),
    }
}

fn when(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

pub fn run(g: &Global, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            name,
            permissions,
            expires,
            publish_rate,
            publish_bytes_rate,
            max_subscriptions,
            max_topics,
            max_partitions,
            max_connections,
            data_dir,
        } => {
            let quotas = herald_server::auth::quotas::Quotas {
                publish_events_per_s: publish_rate,
                publish_bytes_per_s: publish_bytes_rate,
                subscriptions: max_subscriptions,
                connections: max_connections,
                topics: max_topics,
                partitions: max_partitions,
            };
            let made = tokens::create_with(&data_dir, &name, &permissions, expires, quotas)
                .with_context(|| format!("making a token in {}", data_dir.display()))?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "token": made.token,
                        "name": made.record.name,
                        "id": made.record.id,
                        "permissions": made.record.permissions,
                        "expires_ms": made.record.expires_ms,
                        "quotas": made.record.quotas,
                    })
                );
            } else {
                println!("{}", made.token);
                eprintln!(
                    "token {:?} made; it is shown only this once. Give it to the client as HERALD_TOKEN (or \
                     `Authorization: Bearer …`).{}",
                    made.record.name,
                    made.record.expires_ms.map(|e| format!(" It expires {}.", when(e))).unwrap_or_default()
                );
            }
        }
        TokenCmd::List { data_dir } => {
            let list = tokens::list(&data_dir).with_context(|| format!("reading tokens in {}", data_dir.display()))?;
            let now = herald_server::auth::tokens::now_ms();
            let state = |t: &tokens::TokenRecord| {
                if t.revoked_ms.is_some() {
                    "revoked"
                } else if t.expires_ms.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "live"
                }
            };
            if g.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name, "id": t.id, "state": state(t), "permissions": t.permissions,
                            "created_ms": t.created_ms, "expires_ms": t.expires_ms, "revoked_ms": t.revoked_ms,
                            "quotas": t.quotas,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if list.is_empty() {
                println!("no tokens in {}", data_dir.display());
            } else {
                println!("{:<24} {:<8} {:<26} permissions", "name", "state", "expires");
                for t in &list {
                    let expires = t.expires_ms.map_or_else(|| "never".to_owned(), when);
                    println!("{:<24} {:<8} {:<26} {}", t.name, state(t), expires, t.permissions.join(" "));
                }
            }
        }
        TokenCmd::Revoke { name, data_dir } => {
            let t = tokens::revoke(&data_dir, &name)?;
            println!("revoked {:?} (id {})", t.name, t.id);
        }
        TokenCmd::Prune { data_dir } => {
            let n = tokens::prune(&data_dir)?;
            println!("removed {n} revoked or expired token(s)");
        }
    }
    Ok(())
}

pub async fn whoami(g: &Global) -> Result<()> {
    let client = herald::connect_with(&g.url, g.connect_options()).await?;
    let me = client.whoami().await;
    let _ = client.close().await;
    let me = me?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "principal": me.principal, "anonymous": me.anonymous,
                "permissions": me.permissions, "expires_ms": me.expires_ms,
            })
        );
        return Ok(());
    }
    if me.anonymous {
        println!("anonymous (the server requires no token): may do everything");
        return Ok(());
    }
    println!("{}", me.principal);
    if me.permissions.is_empty() {
        bail!("{} holds no permissions: it may only ask who it is", me.principal);
    }
    for p in &me.permissions {
        println!("  {p}");
    }
    if let Some(e) = me.expires_ms {
        println!("expires {}", when(e));
    }
    Ok(())
}
