//! The `crbridge` command line: `run`, `check`, `status`, `replay`, `snapshot`, `tail`,
//! `deadletters`, `rbac`, `schema`, `asyncapi`, `completions`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use crbridge::cmd::deadletters::{Action, LetterId};
use crbridge::cmd::Output;
use crbridge::config;
use crbridge::replay::{parse_time, ReplayRequest, Start};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Change data capture for Kubernetes custom resources → CloudEvents on Kafka, NATS, RabbitMQ.
#[derive(Parser)]
#[command(name = "crbridge", version)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CRBRIDGE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the configured kinds and publish their changes until SIGTERM.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
    },
    /// Validate the config, then probe the cluster and every sink; report per item.
    Check {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// text or json (one object per item and line: item, name, ok, detail).
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Per watch: checkpoint, objects known, last event; per sink: cursor, lag, dead
    /// letters. Works on a running instance (its admin endpoint) and a stopped one.
    Status {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// text or json.
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Re-publish retained events to one sink, in their original order with their
    /// original ids (the sink's cursor is not touched).
    #[command(group(clap::ArgGroup::new("start").required(true).args(["from_seq", "since"])))]
    Replay {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// The sink to publish to.
        #[arg(long)]
        sink: String,
        /// Start at this outbox sequence number.
        #[arg(long)]
        from_seq: Option<u64>,
        /// Start at events written at or after this time: RFC 3339, or a duration ago (15m).
        #[arg(long)]
        since: Option<String>,
        /// Stop after events written at this time: RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Only this watch's events.
        #[arg(long)]
        watch: Option<String>,
    },
    /// Emit the current state of every object of a watch as `snapshot` events (to one sink,
    /// or to every sink of the watch).
    Snapshot {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// The watch.
        #[arg(long)]
        watch: String,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Consume a sink's broker and print the events (type, subject, id, short patch).
    Tail {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// The sink whose broker to read.
        #[arg(long)]
        sink: String,
        /// Only this watch's events.
        #[arg(long)]
        watch: Option<String>,
        /// text or json (one structured CloudEvent per line).
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Start with the oldest retained message instead of new ones (NATS, Kafka).
        #[arg(long)]
        from_start: bool,
    },
    /// List, show, drop or redrive dead letters (events a sink refused for good) of a
    /// stopped instance. A letter's ID is `SINK:SEQ` (its sink and outbox sequence number,
    /// as `list` prints it).
    Deadletters {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: DeadLetterCmd,
    },
    /// Print least-privilege RBAC (YAML) for exactly the configured kinds, plus Leases
    /// when leader election is on. Plurals and scopes come from the cluster's discovery.
    Rbac {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// Namespace crbridge runs in (its ServiceAccount's).
        #[arg(long, default_value = "crbridge")]
        namespace: String,
        /// ServiceAccount name.
        #[arg(long, default_value = "crbridge")]
        service_account: String,
        /// In a fleet, the cluster to print it for (its watches; the Lease role only in
        /// the home cluster); default the home cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Print the JSON Schema (2020-12) of the `data` of one watch's events, built from its
    /// CRD's openAPIV3Schema in the cluster (a kind without a CRD gets a permissive one).
    Schema {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
        /// The watch (its name).
        #[arg(long)]
        watch: String,
    },
    /// Print the AsyncAPI 3.0 document of the whole config: a channel per watch and sink,
    /// the protocol bindings, the CloudEvents headers, the payload schemas of `schema`.
    Asyncapi {
        /// The config file.
        #[arg(short, long, default_value = "crbridge.yaml")]
        config: PathBuf,
    },
    /// Print a shell completion script, e.g. `crbridge completions bash >
    /// /etc/bash_completion.d/crbridge`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The shells `completions` writes a script for.
#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Subcommand)]
enum DeadLetterCmd {
    /// One line per letter: ID (SINK:SEQ), event id, type, subject, time, reason.
    List {
        /// Only this sink's letters.
        #[arg(long)]
        sink: Option<String>,
    },
    /// One letter, with its event, as JSON.
    Show {
        /// SINK:SEQ.
        id: LetterId,
    },
    /// Delete one letter.
    Drop {
        /// SINK:SEQ.
        id: LetterId,
    },
    /// Publish letters again through their sink with their original event ids; each is
    /// deleted once the broker acks it, kept if refused again.
    Redrive {
        /// Only this sink's letters.
        #[arg(long)]
        sink: Option<String>,
        /// Only this letter (SINK:SEQ).
        #[arg(long)]
        id: Option<LetterId>,
    },
}

/// mimalloc: the pipeline allocates many small JSON nodes; glibc's allocator spent a third
/// of the CPU in the ceiling benchmark (BENCHMARKS.md). Without the `mimalloc` feature the
/// system allocator serves, which heap profilers (valgrind's massif) understand.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Whatever CRBRIDGE_LOG asks for, no secret reaches the log: see `holds_secrets`.
    let cap = tracing_subscriber::filter::filter_fn(|m| !holds_secrets(m));
    match format {
        LogFormat::Text => b.finish().with(cap).init(),
        LogFormat::Json => b.json().flatten_event(true).finish().with(cap).init(),
    }
}

/// Log events that can carry credentials, dropped at every setting: lapin prints every frame
/// it writes at TRACE, and the AMQP connection.start-ok frame holds the broker password
/// (SASL PLAIN); its DEBUG and higher events print no client frame.
fn holds_secrets(m: &tracing::Metadata<'_>) -> bool {
    *m.level() == tracing::Level::TRACE && m.target().starts_with("lapin")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs its life at INFO; a one-shot command prints its own output and only
    // warnings besides.
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    init_logs(cli.log_format, default_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crbridge: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Check { config, output } => crbridge::check::run(&config, output).await,
            Command::Status { config, output } => {
                let cfg = config::load(&config)?;
                crbridge::cmd::status::run(&cfg, output).await
            }
            Command::Replay {
                config,
                sink,
                from_seq,
                since,
                until,
                watch,
            } => {
                let cfg = config::load(&config)?;
                let start = match (from_seq, since) {
                    (Some(n), _) => Start::Seq(n),
                    (None, Some(t)) => Start::SinceMs(parse_time(&t).map_err(anyhow::Error::msg)?),
                    (None, None) => anyhow::bail!("give --from-seq or --since"),
                };
                let until_ms = until
                    .map(|t| parse_time(&t).map_err(anyhow::Error::msg))
                    .transpose()?;
                let req = ReplayRequest {
                    sink,
                    start,
                    until_ms,
                    watch,
                };
                crbridge::cmd::replay::run(&cfg, &config.display().to_string(), req).await
            }
            Command::Snapshot {
                config,
                watch,
                sink,
            } => {
                let cfg = config::load(&config)?;
                crbridge::cmd::snapshot::run(
                    &cfg,
                    &config.display().to_string(),
                    &watch,
                    sink.as_deref(),
                )
                .await
            }
            Command::Tail {
                config,
                sink,
                watch,
                output,
                count,
                from_start,
            } => {
                let cfg = config::load(&config)?;
                crbridge::cmd::tail::run(
                    &cfg,
                    &config.display().to_string(),
                    &sink,
                    watch.as_deref(),
                    output,
                    count,
                    from_start,
                )
                .await
            }
            Command::Deadletters { config, action } => {
                let cfg = config::load(&config)?;
                let action = match action {
                    DeadLetterCmd::List { sink } => Action::List { sink },
                    DeadLetterCmd::Show { id } => Action::Show(id),
                    DeadLetterCmd::Drop { id } => Action::Drop(id),
                    DeadLetterCmd::Redrive { sink, id } => Action::Redrive { sink, id },
                };
                crbridge::cmd::deadletters::run(&cfg, &config.display().to_string(), action).await
            }
            Command::Rbac {
                config,
                namespace,
                service_account,
                cluster,
            } => rbac(&config, namespace, service_account, cluster).await,
            Command::Schema { config, watch } => {
                let cfg = config::load(&config)?;
                crbridge::cmd::schema::run(&cfg, &watch).await
            }
            Command::Asyncapi { config } => {
                let cfg = config::load(&config)?;
                crbridge::cmd::asyncapi::run(&cfg).await
            }
            Command::Completions { shell } => {
                let shell = clap_complete::Shell::from(shell);
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "crbridge",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crbridge: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = config::load(path)?;
    crbridge::app::run(cfg, &path.display().to_string()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn rbac(
    path: &std::path::Path,
    namespace: String,
    service_account: String,
    cluster: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = config::load(path)?;
    let cluster = cluster.unwrap_or_else(|| cfg.cluster.clone());
    let Some(target) = cfg.clusters.iter().find(|c| c.name == cluster) else {
        let known: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
        anyhow::bail!(
            "unknown cluster {cluster:?} (configured: {})",
            known.join(", ")
        );
    };
    let client = crbridge::cluster::client_for(target).await?;
    let mut kinds = Vec::new();
    for w in cfg.watches.iter().filter(|w| w.clusters.contains(&cluster)) {
        if w.is_group() {
            kinds.push(crbridge::rbac::ResolvedKind::whole_group(w));
            continue;
        }
        let r = crbridge::plan::resolve(&client, w).await?;
        kinds.push(crbridge::rbac::ResolvedKind::from_watch(
            w,
            &r.resource.plural,
            r.namespaced,
        ));
    }
    let opts = crbridge::rbac::RbacOptions {
        namespace,
        service_account,
        lease: cluster == cfg.cluster,
        ..Default::default()
    };
    print!("{}", crbridge::rbac::manifests(&cfg, &kinds, &opts));
    Ok(ExitCode::SUCCESS)
}

/// The error and its causes on one line, without repeating a cause the message already has.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
