//! `herald`: one binary for the server, its clients, the benchmark and the demo.

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

mod bench;
mod commands;

/// mimalloc instead of glibc's malloc: with a server's many threads allocating small buffers,
/// glibc's arenas took about 40% of the CPU of `herald bench --serve` (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;
mod schema;
mod serve;
mod token;

/// Options every client command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Backend to talk to: herald://host:port (a server), mem://, file:///path.
    #[arg(long, env = "HERALD_URL", default_value = "herald://127.0.0.1:7281", global = true)]
    pub url: String,
    /// JSON output, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// API token for a server that requires one (`herald token create`); better in HERALD_TOKEN
    /// than on a command line others can see.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Connects to herald:// over TLS, trusting this CA (PEM) for the server's certificate.
    #[arg(long, env = "HERALD_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Connects to herald:// over TLS, trusting the system's roots.
    #[arg(long, env = "HERALD_TLS", global = true)]
    pub tls: bool,
}

impl Global {
    /// What `herald::connect_with` needs besides the URL.
    pub fn connect_options(&self) -> herald::ConnectOptions {
        // The environment's NATS credentials (HERALD_NATS_*), then the flags (which clap also
        // reads from HERALD_TOKEN, HERALD_CA and HERALD_TLS).
        herald::ConnectOptions {
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca: self.ca.clone(),
            tls: self.tls,
            ..herald::ConnectOptions::from_env()
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Herald: durable events with consumer groups, retries and dead letters")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server: the embedded broker behind gRPC and HTTP/JSON.
    Serve(serve::ServeArgs),
    /// Creates, lists, describes and deletes topics.
    #[command(subcommand)]
    Topic(commands::TopicCmd),
    /// Publishes one event, or one per stdin line with `-`.
    Publish(commands::PublishArgs),
    /// Consumes in a group, printing one JSON event per line and acking each.
    Consume(commands::ConsumeArgs),
    /// Lists, describes and resets consumer groups.
    #[command(subcommand)]
    Group(commands::GroupCmd),
    /// Lists, shows, replays and purges a group's dead letters.
    #[command(subcommand)]
    Dlq(commands::DlqCmd),
    /// Shows an event's history: every delivery, failure, dead letter and replay, per group.
    #[command(subcommand)]
    Event(commands::EventCmd),
    /// Registers, checks, shows and compares the schemas of a topic's event types.
    #[command(subcommand)]
    Schema(schema::SchemaCmd),
    /// Prints the server's AsyncAPI 3.0 document: topics, event types with their schemas, groups.
    Asyncapi,
    /// Makes, lists and revokes API tokens (in a server's data directory).
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Shows who the server takes you for (your token's name) and what you may do.
    Whoami,
    /// Measures throughput and latency (OpenMessaging Benchmark style) against any URL.
    Bench(bench::BenchArgs),
    /// Runs the demo: a server, an orders topic, two consumer groups, a live table.
    Demo(demo::DemoArgs),
    /// Prints shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    // Usage errors exit 1 like every other error (clap's default is 2); help and version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Serve(a) = cli.command {
        // The server reads its [telemetry] section too.
        return serve::run(a).await;
    }
    // Traces of what this command publishes and handles, when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = herald::telemetry::install(&herald::telemetry::TelemetryConfig::default(), "herald-cli")?;
    let result = command(cli).await;
    if let Some(t) = telemetry {
        tokio::task::spawn_blocking(move || t.shutdown()).await?;
    }
    result
}

async fn command(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Serve(a) => serve::run(a).await,
        Command::Topic(c) => commands::topic(&g, c).await,
        Command::Publish(a) => commands::publish(&g, a).await,
        Command::Consume(a) => commands::consume(&g, a).await,
        Command::Group(c) => commands::group(&g, c).await,
        Command::Dlq(c) => commands::dlq(&g, c).await,
        Command::Event(c) => commands::event(&g, c).await,
        Command::Schema(c) => schema::schema(&g, c).await,
        Command::Asyncapi => schema::asyncapi(&g).await,
        Command::Token(c) => token::run(&g, c),
        Command::Whoami => token::whoami(&g).await,
        Command::Bench(a) => bench::run(&g, a).await,
        Command::Demo(a) => demo::run(&g, a).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "herald", &mut std::io::stdout());
            Ok(())
        }
    }
}
