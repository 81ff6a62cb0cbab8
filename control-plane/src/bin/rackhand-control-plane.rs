//! `rackhand-control-plane`: the control plane server and its admin helpers.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rackhand_control_plane::config::{Config, LogFormat};
use rackhand_control_plane::{pki, server, telemetry};

#[derive(Parser)]
#[command(
    name = "rackhand-control-plane",
    version,
    about = "Rackhand control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the agent listener and the workers.
    Serve {
        /// Path of the TOML configuration file.
        #[arg(long, env = "RACKHAND_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long, env = "RACKHAND_CONFIG")]
        config: PathBuf,
    },
    /// Print the sha256 of an API token read from standard input, for
    /// `[[api.tokens]] sha256`.
    HashToken,
    /// Print the agent CA's fingerprint (creating the CA if needed), which
    /// site agents pin as `control_plane.ca_fingerprint`.
    CaFingerprint {
        #[arg(long, env = "RACKHAND_CONFIG")]
        config: PathBuf,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            telemetry::init(config.log_format);
            server::serve(config).await
        }
        Command::CheckConfig { config } => {
            let checked = Config::load(&config)?;
            server::check(&checked)?;
            println!("{}: ok", checked.path.display());
            Ok(())
        }
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .context("reading the token from stdin")?;
            let token = token.trim();
            anyhow::ensure!(
                token.len() >= 16,
                "a token must be at least 16 characters long"
            );
            let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
            println!("{}", hex::encode(hash));
            Ok(())
        }
        Command::CaFingerprint { config } => {
            let config = Config::load(&config)?;
            telemetry::init(LogFormat::Text);
            let ca = pki::Ca::load_or_create(&config.state_dir.join("pki"))?;
            println!("{}", ca.fingerprint);
            Ok(())
        }
    }
}
