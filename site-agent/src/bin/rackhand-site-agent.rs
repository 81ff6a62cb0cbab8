//! `rackhand-site-agent`: the site agent and its image store helper.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rackhand_images::ImageStore;
use rackhand_site_agent::config::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "rackhand-site-agent", version, about = "Rackhand site agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll if needed, then run the task loop and the PXE services.
    Run {
        /// Path of the TOML configuration file.
        #[arg(long, env = "RACKHAND_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long, env = "RACKHAND_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Manage the local image store.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Copy files into the store, hashing them in full; prints `sha256  path`.
    Import {
        #[arg(long, env = "RACKHAND_AGENT_CONFIG")]
        config: PathBuf,
        /// Files to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            init_logging(config.json_logs);
            rackhand_site_agent::run(config).await
        }
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            rackhand_site_agent::preflight(&config)?;
            println!("{}: ok", config.path.display());
            Ok(())
        }
        Command::Image(ImageCommand::Import { config, files }) => {
            let config = Config::load(&config)?;
            init_logging(config.json_logs);
            let store = ImageStore::open(&config.image_store)?;
            for file in files {
                let stored = store.import(&file).await?;
                println!("{}  {}", stored.digest, file.display());
            }
            Ok(())
        }
    }
}
