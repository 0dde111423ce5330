//! The `docflow` binary: parses the command line, loads configuration, sets
//! up logging, and hands over to `docflow::app`.

use std::{io::BufRead, process::ExitCode};

use clap::{Parser, Subcommand};
use docflow::{app, config::Config, telemetry};

#[derive(Parser)]
#[command(
    name = "docflow",
    version,
    about = "Asynchronous document-processing backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (one of several replicas; needs REDIS_URL).
    Api,
    /// Run the background worker.
    Worker,
    /// API and worker in one process, migrations applied at start; without
    /// REDIS_URL it uses in-process state (single node only).
    AllInOne,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from the first line of stdin.
    Create {
        #[arg(long)]
        email: String,
        /// Create it as an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Make an existing account an admin.
    Promote {
        #[arg(long)]
        email: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Api => app::run_api(config).await.map(|()| None),
            Command::Worker => app::run_worker(config).await.map(|()| None),
            Command::AllInOne => app::run_all_in_one(config).await.map(|()| None),
            Command::Migrate => app::run_migrate(config).await.map(|()| None),
            Command::User { command } => match command {
                UserCommand::Create { email, admin } => {
                    let password = read_password()?;
                    app::create_user(config, &email, password, admin)
                        .await
                        .map(Some)
                }
                UserCommand::Promote { email } => app::promote_user(config, &email).await.map(Some),
            },
        }
    });
    match outcome {
        Ok(message) => {
            if let Some(message) = message {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            // One line, with the cause chain, for the operator.
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "expected the password on stdin");
    Ok(password)
}
