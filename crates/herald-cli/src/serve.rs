//! `herald serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

/// Runs the server until SIGTERM or SIGINT. Precedence: flags, then `HERALD_*` variables, then
/// the `--config` file, then defaults; unknown keys are errors.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./herald-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:7280].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// gRPC listen address [default: 127.0.0.1:7281].
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// Largest event accepted, in bytes [default: 1048576].
    #[arg(long)]
    pub max_event_bytes: Option<usize>,
    /// Authentication: none (anyone may do anything; loopback only unless --allow-anonymous)
    /// or token (API tokens made by `herald token create`, with their permissions)
    /// [default: none].
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,
    /// TLS on both ports: the server's PEM certificate chain (with --tls-key; re-read when it
    /// changes).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serves anonymous access on a non-loopback address (anyone who reaches it may do
    /// everything): only on a network you trust.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AuthArg {
    /// No authentication.
    None,
    /// API tokens.
    Token,
}

/// How the server logs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    init_logging(args.log_format);
    let mut flags: Vec<(&str, toml::Value)> = Vec::new();
    if let Some(d) = &args.data_dir {
        flags.push(("data_dir", toml::Value::String(d.display().to_string())));
    }
    if let Some(a) = args.http {
        flags.push(("http", toml::Value::String(a.to_string())));
    }
    if let Some(a) = args.grpc {
        flags.push(("grpc", toml::Value::String(a.to_string())));
    }
    if let Some(n) = args.max_event_bytes {
        flags.push(("max_event_bytes", toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))));
    }
    if let Some(a) = args.auth {
        let mode = match a {
            AuthArg::None => "none",
            AuthArg::Token => "token",
        };
        flags.push(("auth.mode", toml::Value::String(mode.into())));
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        // One value: a `[tls]` with only one of the two is refused.
        let mut t = toml::Table::new();
        t.insert("cert".into(), toml::Value::String(cert.display().to_string()));
        t.insert("key".into(), toml::Value::String(key.display().to_string()));
        flags.push(("tls", toml::Value::Table(t)));
    }
    if args.allow_anonymous {
        flags.push(("auth.allow_anonymous", toml::Value::Boolean(true)));
    }
    // HERALD_DATA_DIR and friends; other HERALD_* names are errors unless they are the client's.
    let config = herald_server::ServerConfig::load(args.config.as_deref(), std::env::vars(), &flags)?;
    herald_server::raise_descriptor_limit();
    let telemetry = herald::telemetry::install(&config.telemetry.config()?, "herald-server")?;
    if telemetry.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    let server = herald_server::Server::start(config).await?;
    let exposed = [server.http_addr(), server.grpc_addr()];
    if server.state().guard.exposed_anonymously(&exposed) {
        eprintln!(
            "\n!!! WARNING: ANONYMOUS ACCESS on {} and {} (--allow-anonymous): anyone who reaches these ports may \
             publish, read, delete topics and purge dead letters. Turn on --auth token.\n",
            exposed[0], exposed[1]
        );
    }
    // One line a script can wait for.
    let (http, grpc) = if server.state().config.tls.is_some() { ("https", "grpcs") } else { ("http", "grpc") };
    println!("herald listening: {http}://{} {grpc}://{}", server.http_addr(), server.grpc_addr());
    server.run_until(herald_server::shutdown_signal()).await?;
    if let Some(t) = telemetry {
        tokio::task::spawn_blocking(move || t.shutdown()).await?;
    }
    Ok(())
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
