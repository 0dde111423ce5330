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
    /// Extract metadata and text from one file and print the result as JSON
    /// (what the worker's sandboxed extractor processes do for every job).
    Extract {
        /// The file (not with --serve).
        #[arg(required_unless_present = "serve")]
        path: Option<std::path::PathBuf>,
        /// The file's type; detected from its content when omitted.
        #[arg(long)]
        content_type: Option<String>,
        /// Skip OCR (of images, and of PDF pages without a text layer).
        #[arg(long)]
        no_ocr: bool,
        #[arg(long, default_value_t = 60)]
        ocr_timeout_secs: u64,
        /// Address-space limit the process sets on itself before reading.
        #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
        address_space_bytes: u64,
        /// CPU-time limit the process sets on itself before reading.
        #[arg(long, default_value_t = 120)]
        cpu_seconds: u64,
        /// Serve requests from a worker over stdin/stdout (the worker's
        /// extractor pool starts processes this way).
        #[arg(long, hide = true)]
        serve: bool,
        /// With --serve: the worker's pid; the process ends when it dies.
        #[arg(long, hide = true, requires = "serve")]
        parent_pid: Option<u32>,
    },
    /// Copy the original (Python) DocFlow's accounts, documents, jobs and
    /// dead letters into this database, and its objects into this storage
    /// (docs/migrating.md). Safe to run again: what is here stays.
    ImportOriginal {
        /// The original's database URL (postgres:// or postgresql+psycopg://).
        #[arg(long)]
        from_database: String,
        /// Where the original's objects are, as a STORAGE_URL (a directory,
        /// or s3://BUCKET reached with this process's S3 settings). Omit it
        /// when this DocFlow uses the original's bucket: objects are then
        /// only checked.
        #[arg(long)]
        from_storage: Option<String>,
    },
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
    /// Delete an account with its documents (and their stored bytes), jobs
    /// and sessions: its tokens stop working at once.
    Delete {
        #[arg(long)]
        email: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Extraction needs no configuration (it is run by the worker, with none
    // of the service's secrets), so it is handled before config is loaded.
    if let Command::Extract {
        path,
        content_type,
        no_ocr,
        ocr_timeout_secs,
        address_space_bytes,
        cpu_seconds,
        serve,
        parent_pid,
    } = &cli.command
    {
        if *serve {
            let parent = parent_pid.unwrap_or_else(std::os::unix::process::parent_id);
            let code = docflow_extract::serve::serve(parent, *address_space_bytes);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        let Some(path) = path else {
            eprintln!("extract: a FILE is required");
            return ExitCode::from(2);
        };
        return extract(
            path,
            content_type.as_deref(),
            !no_ocr,
            *ocr_timeout_secs,
            *address_space_bytes,
            *cpu_seconds,
        );
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init(
        config.telemetry.otlp_endpoint.as_ref(),
        &config.telemetry.service_name,
    );
    docflow::config::legacy_env::log(&config.legacy_notes);
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
            Command::Extract { .. } => unreachable!("handled before configuration is loaded"),
            Command::ImportOriginal {
                from_database,
                from_storage,
            } => app::import_original(
                config,
                docflow::import_original::Source {
                    database_url: from_database,
                    storage_url: from_storage,
                },
            )
            .await
            .map(Some),
            Command::User { command } => match command {
                UserCommand::Create { email, admin } => {
                    let password = read_password()?;
                    app::create_user(config, &email, password, admin)
                        .await
                        .map(Some)
                }
                UserCommand::Promote { email } => app::promote_user(config, &email).await.map(Some),
                UserCommand::Delete { email } => app::delete_user(config, &email).await.map(Some),
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

fn extract(
    path: &std::path::Path,
    content_type: Option<&str>,
    ocr: bool,
    ocr_timeout_secs: u64,
    address_space_bytes: u64,
    cpu_seconds: u64,
) -> ExitCode {
    // The sniffer's refusal is already a sentence; only a declared type
    // that names no extractor is worded as such.
    let kind = match content_type {
        Some(declared) => declared
            .parse::<docflow_extract::ContentKind>()
            .map_err(|e| e.to_string()),
        None => std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| {
                docflow::documents::identify(
                    &bytes[..bytes.len().min(docflow::documents::SNIFF_LEN)],
                    None,
                )
                .map_err(|e| e.0)
            }),
    };
    let kind = match kind {
        Ok(kind) => kind,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let limits = docflow_extract::Limits {
        ocr: ocr.then(|| docflow_extract::OcrOptions {
            language: "eng".to_owned(),
            timeout: std::time::Duration::from_secs(ocr_timeout_secs),
            strategy: docflow_extract::OcrStrategy::Auto,
            max_pages: docflow_extract::DEFAULT_OCR_MAX_PAGES,
        }),
        ..docflow_extract::Limits::default()
    }
    .within_cpu_seconds(cpu_seconds);
    let code =
        docflow_extract::serve::extract_once(path, kind, address_space_bytes, cpu_seconds, &limits);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "expected the password on stdin");
    Ok(password)
}
