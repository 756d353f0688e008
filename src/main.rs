//! The `crbridge` command line: `run`, `check`, `rbac`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use crbridge::config;

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
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
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
            Command::Check { config } => crbridge::check::run(&config).await,
            Command::Rbac {
                config,
                namespace,
                service_account,
            } => rbac(&config, namespace, service_account).await,
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
) -> anyhow::Result<ExitCode> {
    let cfg = config::load(path)?;
    let client = crbridge::app::kube_client(&cfg).await?;
    let mut kinds = Vec::new();
    for w in &cfg.watches {
        let r = crbridge::app::resolve(&client, w).await?;
        kinds.push(crbridge::rbac::ResolvedKind::from_watch(
            w,
            &r.resource.plural,
            r.namespaced,
        ));
    }
    let opts = crbridge::rbac::RbacOptions {
        namespace,
        service_account,
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
