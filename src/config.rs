//! Typed configuration, read once from the environment at start-up.
//!
//! Every variable is documented in `.env.example`. A bad or missing value stops
//! start-up with one line naming the variable; secrets are `secrecy` boxes, so
//! they never reach a log line or a `Debug` dump and are wiped when dropped;
//! `expose_secret()` is the only way to read one (grep for it when auditing).

pub mod legacy_env;

use std::{
    collections::HashMap, fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration,
};

use docflow_extract::ContentKind;

use crate::domain::OcrLanguages;
use ipnet::IpNet;
use secrecy::{SecretSlice, SecretString};
use url::Url;

/// The upload cap the seed contract uses: 25 MiB.
const DEFAULT_MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;
/// HS256 keys shorter than the hash output weaken the MAC; RFC 7518 §3.2.
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Where uploaded bytes live.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    /// A local directory: the embedded default, single-node only.
    Local { root: PathBuf },
    /// An S3-compatible bucket (AWS S3, MinIO, …).
    S3(S3Config),
}

#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Custom endpoint for MinIO and friends; implies path-style addressing.
    pub endpoint: Option<String>,
    /// Where clients reach the same server, when that differs from where
    /// DocFlow reaches it (compose: `http://minio:9000` inside, the
    /// published port outside). Presigned links are signed for this host,
    /// since the signature covers it.
    pub public_endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
}

/// Bounds on client connections to the API, applied before any request is
/// read (`http::serve`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at once; past it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address (429 past it). A trusted
    /// proxy's connections count only against `max_connections`.
    pub max_connections_per_ip: usize,
    /// A request's header must arrive within this; an idle keep-alive
    /// connection is closed after it too.
    pub header_read_timeout: Duration,
}

/// Per-IP request budgets for the unauthenticated auth endpoints.
#[derive(Clone, Copy, Debug)]
pub struct AuthRateLimit {
    pub requests: u32,
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub database_url: SecretString,
    pub database_max_connections: u32,
    /// `None` selects the in-process implementations (single node only).
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key we write, so several deployments (or test
    /// runs) can share one Redis without seeing each other's state.
    pub redis_key_prefix: String,
    pub storage: StorageConfig,
    pub jwt_secret: SecretSlice<u8>,
    pub max_upload_bytes: u64,
    pub allowed_content_types: Vec<ContentKind>,
    pub job_max_attempts: u32,
    pub tesseract_enabled: bool,
    /// Tesseract language codes joined by `+` (`eng+deu`), checked against
    /// `tesseract --list-langs` when a worker starts.
    pub ocr_languages: OcrLanguages,
    /// Peers whose `X-Forwarded-For` we believe (the reverse proxy).
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed to call the API from a browser; empty = same-origin only.
    pub cors_origins: Vec<String>,
    pub worker_metrics_addr: SocketAddr,
    /// Upper bound on how long a request may take before it is answered 503.
    pub request_timeout: Duration,
    pub connections: ConnectionLimits,
    pub auth_rate_limit: AuthRateLimit,
    /// Uploads per minute per user.
    pub upload_rate_limit_per_minute: u32,
    /// Upper bound on one upload request (a 25 MiB file on a slow link).
    pub upload_timeout: Duration,
    /// Lifetime of download links.
    pub download_url_ttl: Duration,
    /// The URL clients reach the API at, for links we hand out; unset: the
    /// request's Host header over http.
    pub public_base_url: Option<Url>,
    /// Jobs one worker process runs at once.
    pub worker_concurrency: usize,
    /// Jobs a worker claims beyond those it runs, to have the next at hand.
    pub worker_prefetch: usize,
    /// A worker whose lease is not renewed for this long is gone; its runs
    /// are rescued.
    pub worker_lease_ttl: Duration,
    /// Jobs of one user running at once, across all workers.
    pub max_running_per_user: u32,
    /// Extractor processes per worker (documents extracted at once).
    pub extractor_processes: usize,
    /// Documents one extractor process serves before it is replaced.
    pub extractor_max_documents: u32,
    /// Address-space limit of one extractor process.
    pub extractor_memory_bytes: u64,
    /// CPU seconds one document may use in its extractor.
    pub extract_cpu_secs: u64,
    /// How long an Idempotency-Key keeps naming its job.
    pub idempotency_ttl: Duration,
    /// Wall-clock limit of one extraction (the child is killed past it).
    pub extract_timeout: Duration,
    /// Limit of one OCR run; past it the attempt fails as transient.
    pub ocr_timeout: Duration,
    /// PDF pages read by OCR per document, at most.
    pub ocr_max_pages: usize,
    /// Live status streams: the longest one stream stays open (the browser
    /// then reconnects with Last-Event-ID) and the keepalive interval.
    pub sse_max_stream: Duration,
    /// Live status streams one user may hold open in one API process.
    pub sse_max_streams_per_user: usize,
    /// Live status streams one API process holds open in all.
    pub sse_max_streams: usize,
    pub sse_keepalive: Duration,
    /// Lifetime of a job-scoped stream token (for browsers' EventSource).
    pub stream_token_ttl: Duration,
    /// Where traces go (OTLP over HTTP); unset: no tracing export.
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` of exported traces.
    pub otel_service_name: String,
    /// What start-up recognised of the original DocFlow's settings; logged
    /// once logging is up (`legacy_env::log`).
    pub legacy_notes: Vec<legacy_env::Note>,
}

/// Why start-up stopped: names the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
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
        let notes = std::cell::RefCell::new(legacy_env::retired(&raw));
        let lookup = |name: &str| legacy_env::resolve(name, &raw, &mut notes.borrow_mut());
        let env = Env { lookup: &lookup };
        let jwt_secret = env
            .required("JWT_SECRET")
            .and_then(|secret| {
                if secret.len() < MIN_JWT_SECRET_BYTES {
                    Err(ConfigError::new(
                        "JWT_SECRET",
                        format!("must be at least {MIN_JWT_SECRET_BYTES} bytes (generate one with `openssl rand -base64 48`)"),
                    ))
                } else {
                    Ok(SecretSlice::from(secret.into_bytes()))
                }
            })?;

        // Unset: every kind there is an extractor for.
        let allowed_content_types: Vec<ContentKind> = match env.optional("ALLOWED_CONTENT_TYPES") {
            Some(list) => split_list(&list)
                .map(str::parse::<ContentKind>)
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::new("ALLOWED_CONTENT_TYPES", e.to_string()))?,
            None => ContentKind::ALL.to_vec(),
        };
        if allowed_content_types.is_empty() {
            return Err(ConfigError::new(
                "ALLOWED_CONTENT_TYPES",
                "must list at least one content type",
            ));
        }

        let trusted_proxies = env
            .optional("TRUSTED_PROXIES")
            .map(|list| {
                split_list(&list)
                    .map(parse_proxy)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|reason| ConfigError::new("TRUSTED_PROXIES", reason))?
            .unwrap_or_default();

        let cors_origins = env
            .optional("CORS_ORIGINS")
            .map(|list| {
                split_list(&list)
                    .map(|origin| {
                        Url::parse(origin)
                            .map_err(|e| format!("{origin:?} is not an origin: {e}"))
                            .map(|_| origin.trim_end_matches('/').to_owned())
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|reason| ConfigError::new("CORS_ORIGINS", reason))?
            .unwrap_or_default();

        let job_max_attempts: u32 = env.parsed_or("JOB_MAX_ATTEMPTS", 3)?;
        if job_max_attempts == 0 {
            return Err(ConfigError::new("JOB_MAX_ATTEMPTS", "must be at least 1"));
        }
        let max_upload_bytes: u64 = env.parsed_or("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?;
        if max_upload_bytes == 0 {
            return Err(ConfigError::new("MAX_UPLOAD_BYTES", "must be positive"));
        }
        let request_timeout_secs: u64 = env.parsed_or("REQUEST_TIMEOUT_SECS", 30)?;
        if request_timeout_secs == 0 {
            return Err(ConfigError::new("REQUEST_TIMEOUT_SECS", "must be positive"));
        }
        let auth_rate_limit: u32 = env.parsed_or("AUTH_RATE_LIMIT_PER_MINUTE", 10)?;
        if auth_rate_limit == 0 {
            return Err(ConfigError::new(
                "AUTH_RATE_LIMIT_PER_MINUTE",
                "must be positive",
            ));
        }

        let upload_rate_limit_per_minute: u32 =
            env.parsed_or("UPLOAD_RATE_LIMIT_PER_MINUTE", 30)?;
        if upload_rate_limit_per_minute == 0 {
            return Err(ConfigError::new(
                "UPLOAD_RATE_LIMIT_PER_MINUTE",
                "must be positive",
            ));
        }
        let upload_timeout_secs: u64 = env.parsed_or("UPLOAD_TIMEOUT_SECS", 300)?;
        if upload_timeout_secs == 0 {
            return Err(ConfigError::new("UPLOAD_TIMEOUT_SECS", "must be positive"));
        }
        let download_url_ttl_secs: u64 = env.parsed_or("DOWNLOAD_URL_TTL_SECS", 300)?;
        // S3 caps presigned URLs at 7 days.
        if !(1..=7 * 24 * 3600).contains(&download_url_ttl_secs) {
            return Err(ConfigError::new(
                "DOWNLOAD_URL_TTL_SECS",
                "must be between 1 and 604800 (7 days)",
            ));
        }

        let positive_secs = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            let secs: u64 = env.parsed_or(var, default)?;
            if secs == 0 {
                return Err(ConfigError::new(var, "must be positive"));
            }
            Ok(Duration::from_secs(secs))
        };
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let connections = ConnectionLimits {
            max_connections: env.parsed_or("HTTP_MAX_CONNECTIONS", 10_000)?,
            max_connections_per_ip: env.parsed_or("HTTP_MAX_CONNECTIONS_PER_IP", 256)?,
            header_read_timeout: positive_secs("HTTP_HEADER_READ_TIMEOUT_SECS", 10)?,
        };
        if connections.max_connections == 0 {
            return Err(ConfigError::new("HTTP_MAX_CONNECTIONS", "must be positive"));
        }
        if connections.max_connections_per_ip == 0 {
            return Err(ConfigError::new(
                "HTTP_MAX_CONNECTIONS_PER_IP",
                "must be positive",
            ));
        }
        let worker_concurrency: usize = env.parsed_or("WORKER_CONCURRENCY", 64)?;
        if !(1..=1024).contains(&worker_concurrency) {
            return Err(ConfigError::new(
                "WORKER_CONCURRENCY",
                "must be between 1 and 1024",
            ));
        }
        let worker_prefetch: usize = env.parsed_or("WORKER_PREFETCH", 16)?;
        if worker_prefetch > 1024 {
            return Err(ConfigError::new("WORKER_PREFETCH", "must be at most 1024"));
        }
        let worker_lease_ttl = positive_secs("WORKER_LEASE_TTL_SECS", 6)?;
        let max_running_per_user: u32 = env.parsed_or("MAX_RUNNING_PER_USER", 256)?;
        if max_running_per_user == 0 {
            return Err(ConfigError::new("MAX_RUNNING_PER_USER", "must be positive"));
        }
        let extractor_processes: usize = env.parsed_or("EXTRACTOR_PROCESSES", cpus)?;
        if !(1..=256).contains(&extractor_processes) {
            return Err(ConfigError::new(
                "EXTRACTOR_PROCESSES",
                "must be between 1 and 256",
            ));
        }
        let extractor_max_documents: u32 = env.parsed_or("EXTRACTOR_MAX_DOCUMENTS", 500)?;
        if extractor_max_documents == 0 {
            return Err(ConfigError::new(
                "EXTRACTOR_MAX_DOCUMENTS",
                "must be positive",
            ));
        }
        let extractor_memory_bytes: u64 =
            env.parsed_or("EXTRACTOR_MEMORY_BYTES", 2 * 1024 * 1024 * 1024)?;
        if extractor_memory_bytes < 64 * 1024 * 1024 {
            return Err(ConfigError::new(
                "EXTRACTOR_MEMORY_BYTES",
                "must be at least 67108864 (64 MiB)",
            ));
        }
        let extract_cpu_secs: u64 = env.parsed_or("EXTRACT_CPU_SECS", 120)?;
        if extract_cpu_secs == 0 {
            return Err(ConfigError::new("EXTRACT_CPU_SECS", "must be positive"));
        }
        let idempotency_ttl = positive_secs("IDEMPOTENCY_TTL_SECS", 24 * 3600)?;
        let extract_timeout = positive_secs("EXTRACT_TIMEOUT_SECS", 180)?;
        let ocr_timeout = positive_secs("OCR_TIMEOUT_SECS", 60)?;
        let ocr_max_pages: usize =
            env.parsed_or("OCR_MAX_PAGES", docflow_extract::DEFAULT_OCR_MAX_PAGES)?;
        let ocr_languages = OcrLanguages::parse(
            &env.optional("OCR_LANGUAGES")
                .unwrap_or_else(|| "eng".to_owned()),
        )
        .map_err(|invalid| ConfigError::new("OCR_LANGUAGES", invalid.reason))?;
        // Settings that only make sense together.
        if ocr_timeout >= extract_timeout {
            return Err(ConfigError::new(
                "OCR_TIMEOUT_SECS",
                "must be below EXTRACT_TIMEOUT_SECS: OCR runs inside an extraction, which \
                 would be killed first and report a timeout instead of the OCR's own failure",
            ));
        }
        if Duration::from_secs(extract_cpu_secs) > extract_timeout {
            return Err(ConfigError::new(
                "EXTRACT_CPU_SECS",
                "must not exceed EXTRACT_TIMEOUT_SECS (the wall clock would never let it be reached)",
            ));
        }
        let sse_max_stream = positive_secs("SSE_MAX_STREAM_SECS", 60)?;
        let sse_max_streams_per_user: usize = env.parsed_or("SSE_MAX_STREAMS_PER_USER", 32)?;
        let sse_max_streams: usize = env.parsed_or("SSE_MAX_STREAMS", 10_000)?;
        if sse_max_streams_per_user == 0 || sse_max_streams == 0 {
            return Err(ConfigError::new(
                "SSE_MAX_STREAMS_PER_USER",
                "SSE_MAX_STREAMS_PER_USER and SSE_MAX_STREAMS must be positive",
            ));
        }
        let sse_keepalive = positive_secs("SSE_KEEPALIVE_SECS", 15)?;
        let stream_token_ttl = positive_secs("STREAM_TOKEN_TTL_SECS", 60)?;
        let otlp_endpoint = env
            .optional("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|raw| {
                Url::parse(&raw)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "OTEL_EXPORTER_OTLP_ENDPOINT",
                            format!("{raw:?} is not an http(s) URL"),
                        )
                    })
            })
            .transpose()?;

        Ok(Self {
            bind_addr: env.parsed_or("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)))?,
            database_url: SecretString::from(env.optional("DATABASE_URL").unwrap_or_else(|| {
                "postgres://postgres@127.0.0.1:5432/docflow?sslmode=disable".to_owned()
            })),
            database_max_connections: env.parsed_or("DATABASE_MAX_CONNECTIONS", 20)?,
            redis_url: env.optional("REDIS_URL").map(SecretString::from),
            redis_key_prefix: env
                .optional("REDIS_KEY_PREFIX")
                .unwrap_or_else(|| "docflow:".to_owned()),
            storage: storage_from_env(&env)?,
            jwt_secret,
            max_upload_bytes,
            allowed_content_types,
            job_max_attempts,
            tesseract_enabled: env.bool_or("TESSERACT_ENABLED", true)?,
            ocr_languages,
            trusted_proxies,
            cors_origins,
            worker_metrics_addr: env.parsed_or(
                "WORKER_METRICS_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 9100)),
            )?,
            request_timeout: Duration::from_secs(request_timeout_secs),
            connections,
            auth_rate_limit: AuthRateLimit {
                requests: auth_rate_limit,
                window: Duration::from_secs(60),
            },
            upload_rate_limit_per_minute,
            upload_timeout: Duration::from_secs(upload_timeout_secs),
            download_url_ttl: Duration::from_secs(download_url_ttl_secs),
            public_base_url: env
                .optional("PUBLIC_BASE_URL")
                .map(|raw| {
                    Url::parse(&raw)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| {
                            ConfigError::new(
                                "PUBLIC_BASE_URL",
                                format!("{raw:?} is not an http(s) URL"),
                            )
                        })
                })
                .transpose()?,
            worker_concurrency,
            worker_prefetch,
            worker_lease_ttl,
            max_running_per_user,
            extractor_processes,
            extractor_max_documents,
            extractor_memory_bytes,
            extract_cpu_secs,
            idempotency_ttl,
            extract_timeout,
            ocr_timeout,
            ocr_max_pages,
            sse_max_stream,
            legacy_notes: {
                let mut notes = notes.take();
                notes.dedup();
                notes
            },
            sse_max_streams_per_user,
            sse_max_streams,
            sse_keepalive,
            stream_token_ttl,
            otlp_endpoint,
            otel_service_name: env
                .optional("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| "docflow".to_owned()),
        })
    }
}

fn storage_from_env(env: &Env<'_>) -> Result<StorageConfig, ConfigError> {
    let raw = env
        .optional("STORAGE_URL")
        .unwrap_or_else(|| "./data".to_owned());
    storage_at(&raw, "STORAGE_URL", env)
}

impl StorageConfig {
    /// Storage at `url` (a STORAGE_URL: a path, file:///PATH or s3://BUCKET,
    /// the bucket reached with this process's S3 settings); `setting` names
    /// where the URL came from in errors.
    pub fn at(url: &str, setting: &'static str) -> Result<Self, ConfigError> {
        let lookup = |var: &str| std::env::var(var).ok();
        storage_at(url, setting, &Env { lookup: &lookup })
    }
}

fn storage_at(
    raw: &str,
    setting: &'static str,
    env: &Env<'_>,
) -> Result<StorageConfig, ConfigError> {
    let raw = raw.to_owned();
    let invalid = |reason: String| ConfigError::new(setting, reason);

    if let Some(bucket) = raw.strip_prefix("s3://") {
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(invalid(format!(
                "{raw:?}: expected s3://BUCKET (no key prefix)"
            )));
        }
        return Ok(StorageConfig::S3(S3Config {
            bucket: bucket.to_owned(),
            endpoint: env.optional("S3_ENDPOINT_URL"),
            public_endpoint: env.optional("S3_PUBLIC_ENDPOINT_URL"),
            region: env
                .optional("S3_REGION")
                .unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id: env.optional("AWS_ACCESS_KEY_ID").map(SecretString::from),
            secret_access_key: env
                .optional("AWS_SECRET_ACCESS_KEY")
                .map(SecretString::from),
        }));
    }

    let root = if let Some(rest) = raw.strip_prefix("file://") {
        let url = Url::parse(&raw).map_err(|e| invalid(format!("{raw:?}: {e}")))?;
        url.to_file_path()
            .map_err(|()| invalid(format!("{raw:?}: not a local path ({rest})")))?
    } else if raw.contains("://") {
        return Err(invalid(format!(
            "{raw:?}: use file:///PATH, a plain path, or s3://BUCKET"
        )));
    } else {
        PathBuf::from(raw)
    };
    Ok(StorageConfig::Local { root })
}

fn parse_proxy(entry: &str) -> Result<IpNet, String> {
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR range"))
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// Empty counts as unset, so `FOO=` in a .env file means "use the default".
    fn optional(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var)
            .ok_or_else(|| ConfigError::new(var, "is required but not set"))
    }

    fn parsed_or<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| ConfigError::new(var, format!("{raw:?} is invalid: {e}"))),
        }
    }

    fn bool_or(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(
                var,
                format!("{v:?} is not a boolean (true/false)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.worker_metrics_addr.to_string(), "127.0.0.1:9100");
        assert_eq!(config.max_upload_bytes, 26_214_400);
        assert_eq!(config.job_max_attempts, 3);
        assert!(config.redis_url.is_none());
        assert!(
            matches!(config.storage, StorageConfig::Local { ref root } if root == &PathBuf::from("./data"))
        );
    }

    /// `.env.example` is the documented list of settings: every variable
    /// this module reads is in it.
    #[test]
    fn every_setting_is_documented_in_env_example() {
        let documented = include_str!("../.env.example");
        let source = include_str!("config.rs");
        let mut missing = Vec::new();
        for reader in ["parsed_or(\"", "positive_secs(\"", "optional(\""] {
            for piece in source.split(reader).skip(1) {
                let var = piece.split('"').next().unwrap_or_default();
                let listed = documented.lines().any(|line| {
                    line.trim_start_matches("# ")
                        .starts_with(&format!("{var}="))
                });
                if !var.is_empty() && !listed && !missing.contains(&var) {
                    missing.push(var);
                }
            }
        }
        assert!(missing.is_empty(), "not in .env.example: {missing:?}");
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
            config.database_url.expose_secret(),
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
