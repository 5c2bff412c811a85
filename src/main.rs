//! The `moka-ingest` binary: parses the command line, loads configuration, starts telemetry and
//! hands over to the library.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use moka_ingest::{
    app,
    config::{LogFormat, Settings},
    dlq::{commands, Selection},
    shutdown,
    sign::SignedRequest,
    signing::Encoding,
    telemetry,
};

#[derive(Parser)]
#[command(name = "moka-ingest", version, about = "Moka candidates → RabbitMQ → PostgreSQL")]
struct Cli {
    /// Configuration file layered over the built-in defaults (config/default.toml).
    #[arg(long, global = true, env = "MOKA_INGEST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP ingress (POST /api/v2/moka_candidates → RabbitMQ).
    Ingress,
    /// Run the worker (RabbitMQ → PostgreSQL).
    Worker,
    /// Run every role (ingress and worker, and the console when console.users_file is set) in one process.
    All,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect and act on the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Print a signed request body (or a curl command), or send it.
    Sign(SignArgs),
    /// Run the operator console (web pages on console.listen); `console hash-password` makes a
    /// password hash for its users file.
    Console {
        #[command(subcommand)]
        tool: Option<ConsoleCommand>,
    },
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Read a password from standard input (one line) and print its argon2id hash, for a line
    /// `name:role:HASH` of the console's users file.
    HashPassword,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// One line per dead message; removes nothing.
    List {
        /// At most this many messages.
        #[arg(long)]
        limit: Option<usize>,
        /// Only this reason (validation, envelope, database, attachment, delivery_limit).
        #[arg(long)]
        reason: Option<String>,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The whole message: envelope, payload and error.
    Show { message_id: String },
    /// Republish the selected messages to the submission queue with a fresh attempt count.
    Replay {
        #[arg(long, conflicts_with_all = ["id", "reason", "candidate"])]
        all: bool,
        /// Message ids (repeatable).
        #[arg(long, num_args = 1..)]
        id: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        /// A Moka candidate id.
        #[arg(long)]
        candidate: Option<String>,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove messages from the dead-letter queue for good.
    Purge {
        #[arg(long, num_args = 1.., required_unless_present = "all")]
        id: Vec<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
struct SignArgs {
    #[arg(long)]
    access_key: String,
    /// The access key's secret.
    #[arg(long, env = "MOKA_INGEST_SIGN_SECRET", hide_env_values = true)]
    secret: String,
    /// File holding the candidate JSON (the `payload` parameter, sent as is).
    #[arg(long)]
    payload_file: PathBuf,
    /// Where the ingress listens.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v2/moka_candidates")]
    url: String,
    /// Tonce in unix seconds (default: now).
    #[arg(long)]
    tonce: Option<i64>,
    /// How values are written into the signed canonical query: the access key's declared
    /// encoding (`key_encodings`; `raw` unless declared otherwise).
    #[arg(long, value_enum, default_value_t = SignEncoding::Raw)]
    encoding: SignEncoding,
    /// Print a curl command instead of the body.
    #[arg(long)]
    curl: bool,
    /// Post the request and print the answer.
    #[arg(long)]
    send: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SignEncoding {
    Raw,
    Plus,
    Form,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(cli));
    // Every broker connection is closed by now, but lapin's I/O thread of a connection may still
    // be winding down on the runtime's reactor: dropping the runtime under it made every clean
    // shutdown log "A Tokio 1.x context was found, but it is being shutdown" at ERROR. Nothing is
    // left to clean up, so the process ends with the runtime still in place.
    std::mem::forget(runtime);
    result
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Sign(args) = cli.command {
        return sign(args).await;
    }
    if let Command::Console { tool: Some(ConsoleCommand::HashPassword) } = cli.command {
        return hash_password();
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("moka-ingest: {e}");
            std::process::exit(2);
        }
    };
    let target = match cli.command {
        Command::Ingress | Command::Worker | Command::All | Command::Console { .. } => telemetry::LogTarget::Service,
        _ => telemetry::LogTarget::Command,
    };
    telemetry::init_logging(settings.log_format == LogFormat::Json, target);
    for deprecation in &settings.deprecations {
        tracing::warn!("{deprecation}");
    }
    telemetry::metrics();
    let shutdown = shutdown::on_signal();
    match cli.command {
        Command::Ingress => app::run_ingress(&settings, shutdown).await.context("ingress failed"),
        Command::Worker => app::run_worker(&settings, shutdown).await.context("worker failed"),
        Command::All => app::run_all(&settings, shutdown).await.context("moka-ingest failed"),
        Command::Console { .. } => app::run_console(&settings, shutdown).await.context("console failed"),
        Command::Migrate => {
            let applied = app::migrate(&settings).await.context("migration failed")?;
            println!(
                "migrations applied: {}",
                if applied.is_empty() { "none pending".to_string() } else { applied.join(", ") }
            );
            Ok(())
        }
        Command::Dlq(cmd) => {
            let ok = dlq(&settings, cmd).await?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Sign(_) => unreachable!("handled above"),
    }
}

async fn dlq(settings: &Settings, cmd: DlqCommand) -> Result<bool> {
    let ok = match cmd {
        DlqCommand::List { limit, reason, json } => commands::list(settings, limit, reason, json).await?,
        DlqCommand::Show { message_id } => commands::show(settings, &message_id).await?,
        DlqCommand::Replay { all, id, reason, candidate, dry_run } => {
            let selection = Selection { all, ids: id, reason, candidate };
            commands::replay(settings, &selection, dry_run).await?
        }
        DlqCommand::Purge { id, all, yes } => commands::purge(settings, &id, all, yes).await?,
    };
    Ok(ok)
}

/// `console hash-password`: one line of standard input (without its line end) → its hash.
fn hash_password() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    let hash =
        moka_ingest::console::users::hash_password(password).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    println!("{hash}");
    Ok(())
}

async fn sign(args: SignArgs) -> Result<()> {
    let payload = std::fs::read_to_string(&args.payload_file)
        .with_context(|| format!("cannot read {}", args.payload_file.display()))?;
    let tonce = args.tonce.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let encoding = match args.encoding {
        SignEncoding::Raw => Encoding::Raw,
        SignEncoding::Plus => Encoding::Plus,
        SignEncoding::Form => Encoding::Form,
    };
    let request = SignedRequest::new(&args.access_key, &args.secret, &payload, tonce, encoding);
    if args.send {
        let (status, body) = request.send(&args.url).await.context("request failed")?;
        println!("{status} {body}");
        if !(200..300).contains(&status) {
            std::process::exit(1);
        }
    } else if args.curl {
        println!("{}", request.curl(&args.url));
    } else {
        println!("{}", request.form_body());
    }
    Ok(())
}
