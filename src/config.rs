//! Typed configuration, read once from the environment at start-up.
//!
//! The settings come in sections (`sections`): each field there names its
//! variable, default and range once, and clap parses it. Every variable is
//! documented in `.env.example`, under its section's heading. A bad or
//! missing value stops start-up with one line naming the variable; secrets
//! are `secrecy` boxes, so they never reach a log line or a `Debug` dump and
//! are wiped when dropped; `expose_secret()` is the only way to read one
//! (grep for it when auditing).

pub mod legacy_env;
mod sections;

use std::{collections::HashMap, error::Error as _};

use clap::{
    Parser,
    error::{ContextKind, ContextValue, ErrorKind},
};

pub use sections::{
    AuthConfig, ConnectionLimits, DatabaseConfig, ExtractorConfig, HttpConfig, JobConfig,
    LiveConfig, OcrConfig, RedisConfig, S3Config, StorageConfig, StorageSettings, StorageUrl,
    TelemetryConfig, UploadConfig, WorkerConfig,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub uploads: UploadConfig,
    pub jobs: JobConfig,
    pub worker: WorkerConfig,
    pub ocr: OcrConfig,
    pub live: LiveConfig,
    pub telemetry: TelemetryConfig,
    /// What start-up recognised of the original DocFlow's settings; logged
    /// once logging is up (`legacy_env::log`).
    pub legacy_notes: Vec<legacy_env::Note>,
}

/// Every setting, as clap sees it: the sections side by side.
#[derive(Parser)]
#[command(name = "docflow", no_binary_name = true)]
struct Settings {
    #[command(flatten)]
    http: HttpConfig,
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    redis: RedisConfig,
    #[command(flatten)]
    auth: AuthConfig,
    #[command(flatten)]
    storage: StorageSettings,
    #[command(flatten)]
    uploads: UploadConfig,
    #[command(flatten)]
    jobs: JobConfig,
    #[command(flatten)]
    worker: WorkerConfig,
    #[command(flatten)]
    ocr: OcrConfig,
    #[command(flatten)]
    live: LiveConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

/// The storage settings alone, for a second store (`StorageConfig::at`).
#[derive(Parser)]
#[command(name = "docflow", no_binary_name = true)]
struct StorageOnly {
    #[command(flatten)]
    storage: StorageSettings,
}

/// Why start-up stopped: names the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &str, reason: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal in production; a malformed one is not.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            return Err(ConfigError::new(".env", err.to_string()));
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    fn from_lookup(raw: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // The original DocFlow's variables, where they map onto ours.
        let mut notes = legacy_env::retired(&raw);
        let settings: Settings = parse(|name| legacy_env::resolve(name, &raw, &mut notes))?;
        notes.dedup();
        let config = Self {
            http: settings.http,
            database: settings.database,
            redis: settings.redis,
            auth: settings.auth,
            storage: settings.storage.resolve(),
            uploads: settings.uploads,
            jobs: settings.jobs,
            worker: settings.worker,
            ocr: settings.ocr,
            live: settings.live,
            telemetry: settings.telemetry,
            legacy_notes: notes,
        };
        config.check_coherence()?;
        Ok(config)
    }

    /// Settings that are each valid but only make sense together.
    fn check_coherence(&self) -> Result<(), ConfigError> {
        let extractor = &self.worker.extractor;
        if self.ocr.timeout >= extractor.timeout {
            return Err(ConfigError::new(
                "OCR_TIMEOUT_SECS",
                "must be below EXTRACT_TIMEOUT_SECS: OCR runs inside an extraction, which \
                 would be killed first and report a timeout instead of the OCR's own failure",
            ));
        }
        if extractor.cpu_secs > extractor.timeout.as_secs() {
            return Err(ConfigError::new(
                "EXTRACT_CPU_SECS",
                "must not exceed EXTRACT_TIMEOUT_SECS (the wall clock would never let it be reached)",
            ));
        }
        // The extractor holds the whole file, and a parsed PDF's objects
        // take at least as much again: below this the largest uploads could
        // never be read.
        if extractor.memory_bytes < self.uploads.max_bytes.saturating_mul(2) {
            return Err(ConfigError::new(
                "EXTRACTOR_MEMORY_BYTES",
                "must be at least twice MAX_UPLOAD_BYTES: an extractor holds the whole file \
                 and what it parses from it, so the largest uploads would always fail",
            ));
        }
        Ok(())
    }
}

impl StorageConfig {
    /// Storage at `url` (a STORAGE_URL: a path, file:///PATH or s3://BUCKET,
    /// the bucket reached with this process's S3 settings); `setting` names
    /// where the URL came from in errors.
    pub fn at(url: &str, setting: &str) -> Result<Self, ConfigError> {
        let url = StorageUrl::parse(url.trim())
            .map_err(|reason| ConfigError::new(setting, format!("{url:?} is invalid: {reason}")))?;
        let only: StorageOnly = parse(|name| std::env::var(name).ok())?;
        Ok(StorageSettings {
            url,
            ..only.storage
        }
        .resolve())
    }
}

/// Parses `T`'s settings from `lookup`, which gives a variable's value.
/// Empty counts as unset, so `FOO=` in a .env file means "use the default";
/// lists are comma-separated, blanks around entries ignored.
fn parse<T: Parser>(mut lookup: impl FnMut(&str) -> Option<String>) -> Result<T, ConfigError> {
    let command = T::command();
    let mut argv = Vec::new();
    // Each argument's variable and whether its value is a secret, by long name.
    let mut variables = HashMap::new();
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env().and_then(|v| v.to_str()), arg.get_long())
        else {
            continue;
        };
        variables.insert(
            long.to_owned(),
            (var.to_owned(), arg.is_hide_env_values_set()),
        );
        let value = lookup(var).map(|raw| match arg.get_value_delimiter() {
            Some(delimiter) => raw
                .split(delimiter)
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .collect::<Vec<_>>()
                .join(&delimiter.to_string()),
            None => raw.trim().to_owned(),
        });
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            argv.push(format!("--{long}={value}"));
        }
    }
    // The values come from `lookup` alone: clap would otherwise read the
    // process environment behind its back (tests pass maps).
    let matches = command
        .mut_args(|arg| arg.env(None::<&'static str>))
        .try_get_matches_from(argv)
        .map_err(|err| naming_the_variable(&err, &variables))?;
    T::from_arg_matches(&matches).map_err(|err| naming_the_variable(&err, &variables))
}

/// Turns clap's error, which speaks of `--long` arguments, into one that
/// names the variable, without echoing a secret's value.
fn naming_the_variable(
    err: &clap::Error,
    variables: &HashMap<String, (String, bool)>,
) -> ConfigError {
    let argument = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(arg.as_str()),
        Some(ContextValue::Strings(args)) => args.first().map(String::as_str),
        _ => None,
    };
    let long = argument
        .and_then(|arg| arg.strip_prefix("--"))
        .and_then(|arg| arg.split([' ', '=']).next())
        .unwrap_or_default();
    let Some((var, secret)) = variables.get(long) else {
        return ConfigError::new("settings", err.kind().to_string());
    };
    if err.kind() == ErrorKind::MissingRequiredArgument {
        return ConfigError::new(var, "is required but not set");
    }
    let why = err
        .source()
        .map_or_else(|| err.kind().to_string(), ToString::to_string);
    match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if !secret => {
            ConfigError::new(var, format!("{value:?} is invalid: {why}"))
        }
        _ => ConfigError::new(var, why),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::CommandFactory;
    use docflow_extract::ContentKind;
    use secrecy::ExposeSecret;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_need_only_a_jwt_secret() {
        let config = Config::from_map(&vars(&[("JWT_SECRET", SECRET)])).expect("valid");
        assert_eq!(config.http.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.worker.metrics_addr.to_string(), "127.0.0.1:9100");
        assert_eq!(config.uploads.max_bytes, 26_214_400);
        assert_eq!(config.uploads.allowed_content_types, ContentKind::ALL);
        assert_eq!(config.jobs.max_attempts, 3);
        assert_eq!(config.ocr.languages.as_str(), "eng");
        assert!(config.ocr.enabled);
        assert!(config.redis.url.is_none());
        assert!(config.http.trusted_proxies.is_empty());
        assert!(
            matches!(config.storage, StorageConfig::Local { ref root } if root == &PathBuf::from("./data"))
        );
    }

    #[test]
    fn the_settings_are_well_formed() {
        Settings::command().debug_assert();
        StorageOnly::command().debug_assert();
    }

    /// `.env.example` is the documented list of settings: every variable
    /// is there, under its section's heading, with the default the code
    /// has (or empty, where the default is computed or there is none), and
    /// nothing else is there but the logging and build variables.
    #[test]
    fn env_example_documents_every_setting_with_its_default() {
        let mut documented: HashMap<&str, (&str, &str)> = HashMap::new();
        let mut heading = "";
        for line in include_str!("../.env.example").lines() {
            if let Some(rest) = line.strip_prefix("# --- ") {
                heading = rest.trim_end_matches(['-', ' ']);
                continue;
            }
            let line = line.strip_prefix("# ").unwrap_or(line);
            if let Some((var, value)) = line.split_once('=')
                && !var.is_empty()
                && var
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                documented.insert(var, (heading, value));
            }
        }
        let command = Settings::command();
        let mut problems = Vec::new();
        for arg in command.get_arguments() {
            let var = arg
                .get_env()
                .and_then(|v| v.to_str())
                .expect("every setting has a variable");
            let section = arg.get_help_heading().unwrap_or_default();
            let default: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect();
            let default = default.join(",");
            match documented.remove(var) {
                None => problems.push(format!("{var} is not in .env.example")),
                Some((heading, _)) if heading != section => {
                    problems.push(format!(
                        "{var} is under {heading:?}, its section is {section:?}"
                    ));
                }
                Some((_, value))
                    if !value.is_empty() && value != default && !default.is_empty() =>
                {
                    problems.push(format!(
                        "{var}={value} in .env.example, but the default is {default}"
                    ));
                }
                Some(_) => {}
            }
        }
        for (var, (heading, _)) in documented {
            if heading != "Logging and build" {
                problems.push(format!("{var} is in .env.example but no setting reads it"));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_original_docflows_settings_are_mapped_or_named() {
        let config = Config::from_map(&vars(&[
            ("JWT_SECRET", SECRET),
            ("S3_BUCKET", "docflow-documents"),
            ("S3_ENDPOINT_URL", "http://minio:9000"),
            (
                "DATABASE_URL",
                "postgresql+psycopg://docflow:docflow@postgres:5432/docflow",
            ),
            ("CELERY_BROKER_URL", "redis://redis:6379/1"),
        ]))
        .expect("valid");
        let StorageConfig::S3(s3) = &config.storage else {
            panic!("S3_BUCKET selects S3 storage: {:?}", config.storage);
        };
        assert_eq!(s3.bucket, "docflow-documents");
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://docflow:docflow@postgres:5432/docflow"
        );
        let said: Vec<String> = config
            .legacy_notes
            .iter()
            .map(|note| format!("{note:?}"))
            .collect();
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(
            said.iter()
                .any(|n| n.contains("Ignored") && n.contains("CELERY_BROKER_URL"))
        );
        assert!(
            said.iter()
                .any(|n| n.contains("Mapped") && n.contains("s3://docflow-documents"))
        );

        // Our own STORAGE_URL wins over the original's bucket.
        let ours = Config::from_map(&vars(&[
            ("JWT_SECRET", SECRET),
            ("STORAGE_URL", "/srv/docflow"),
            ("S3_BUCKET", "ignored"),
        ]))
        .expect("valid");
        assert!(matches!(ours.storage, StorageConfig::Local { .. }));
        assert!(ours.legacy_notes.is_empty());
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused() {
        for (pairs, var) in [
            (
                &[("OCR_TIMEOUT_SECS", "200"), ("EXTRACT_TIMEOUT_SECS", "180")][..],
                "OCR_TIMEOUT_SECS",
            ),
            (
                &[("EXTRACT_CPU_SECS", "300"), ("EXTRACT_TIMEOUT_SECS", "180")][..],
                "EXTRACT_CPU_SECS",
            ),
            (
                &[
                    ("MAX_UPLOAD_BYTES", "1073741824"),
                    ("EXTRACTOR_MEMORY_BYTES", "1073741824"),
                ][..],
                "EXTRACTOR_MEMORY_BYTES",
            ),
        ] {
            let mut all = vec![("JWT_SECRET", SECRET)];
            all.extend_from_slice(pairs);
            let err = Config::from_map(&vars(&all)).expect_err("contradiction");
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn missing_or_short_jwt_secret_names_the_variable() {
        let err = Config::from_map(&vars(&[])).expect_err("missing");
        assert_eq!(err.var, "JWT_SECRET");
        let err = Config::from_map(&vars(&[("JWT_SECRET", "short")])).expect_err("short");
        assert_eq!(err.var, "JWT_SECRET");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(
            !err.to_string().contains("short"),
            "a secret is never echoed: {err}"
        );
    }

    #[test]
    fn empty_means_unset_and_lists_forgive_blanks() {
        let config = Config::from_map(&vars(&[
            ("JWT_SECRET", SECRET),
            ("BIND_ADDR", "  "),
            ("TRUSTED_PROXIES", " 10.0.0.0/8, ,192.168.1.1 ,"),
            ("ALLOWED_CONTENT_TYPES", ","),
            ("WORKER_CONCURRENCY", " 8 "),
        ]))
        .expect("valid");
        assert_eq!(config.http.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.http.trusted_proxies.len(), 2);
        assert_eq!(config.uploads.allowed_content_types, ContentKind::ALL);
        assert_eq!(config.worker.concurrency, 8);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("BIND_ADDR", "not-an-address"),
            ("MAX_UPLOAD_BYTES", "-1"),
            ("JOB_MAX_ATTEMPTS", "0"),
            ("TESSERACT_ENABLED", "maybe"),
            ("OCR_LANGUAGES", "eng+../../etc"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("STORAGE_URL", "ftp://x"),
            ("STORAGE_URL", "s3://"),
            ("CORS_ORIGINS", "nope"),
            ("ALLOWED_CONTENT_TYPES", "application/pdf,application/zip"),
            ("DOWNLOAD_URL_TTL_SECS", "0"),
            ("UPLOAD_TIMEOUT_SECS", "soon"),
            ("DOWNLOAD_URL_TTL_SECS", "604801"),
            ("IDEMPOTENCY_TTL_SECS", "10000000000000"),
            ("STREAM_TOKEN_TTL_SECS", "31622401"),
            ("WORKER_CONCURRENCY", "0"),
            ("WORKER_CONCURRENCY", "1025"),
            ("EXTRACTOR_MEMORY_BYTES", "1024"),
            ("PUBLIC_BASE_URL", "ftp://example.com"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "nope"),
        ] {
            let err =
                Config::from_map(&vars(&[("JWT_SECRET", SECRET), (var, value)])).expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn storage_url_forms() {
        let config = Config::from_map(&vars(&[
            ("JWT_SECRET", SECRET),
            ("STORAGE_URL", "s3://docs"),
            ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2hunter2"),
        ]))
        .expect("valid");
        let StorageConfig::S3(s3) = &config.storage else {
            panic!("expected S3, got {:?}", config.storage);
        };
        assert_eq!(s3.bucket, "docs");
        assert_eq!(s3.region, "us-east-1");

        let config = Config::from_map(&vars(&[
            ("JWT_SECRET", SECRET),
            ("STORAGE_URL", "file:///var/lib/docflow"),
        ]))
        .expect("valid");
        assert!(
            matches!(config.storage, StorageConfig::Local { ref root } if root == &PathBuf::from("/var/lib/docflow"))
        );
    }

    #[test]
    fn secrets_never_appear_in_debug() {
        let config = Config::from_map(&vars(&[
            ("JWT_SECRET", SECRET),
            ("DATABASE_URL", "postgres://u:dbpassword@h/db"),
            ("REDIS_URL", "redis://:redispassword@h"),
            ("STORAGE_URL", "s3://b"),
            ("AWS_SECRET_ACCESS_KEY", "awssecretvalue"),
        ]))
        .expect("valid");
        let dump = format!("{config:?}");
        for secret in [SECRET, "dbpassword", "redispassword", "awssecretvalue"] {
            assert!(!dump.contains(secret), "{secret} leaked into {dump}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::from_map(&vars(&[
            ("JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes!"),
            ("DATABASE_URL", "postgres://docflow:hunter2@db/docflow"),
            ("REDIS_URL", "redis://:hunter3@redis:6379"),
        ]))
        .expect("valid");
        let printed = format!("{config:?}");
        for secret in ["thirty-two", "hunter2", "hunter3"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
    }
}
