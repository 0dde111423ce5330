//! The settings, section by section. Each field names its environment
//! variable, its default and its range once, here, in its `#[arg]`; clap
//! parses and checks the value (`super::Config::from_lookup` feeds it the
//! environment). `.env.example` documents every variable under its section's
//! heading, with the same defaults: a test in `super` holds the two together.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::Args;
use docflow_extract::ContentKind;
use ipnet::IpNet;
use secrecy::{SecretSlice, SecretString};
use url::Url;

use crate::domain::OcrLanguages;

/// HS256 keys shorter than the hash output weaken the MAC; RFC 7518 §3.2.
const MIN_JWT_SECRET_BYTES: usize = 32;

/// The API's network face.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "HTTP")]
pub struct HttpConfig {
    /// Where the API listens.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub bind_addr: SocketAddr,
    /// Peers whose `X-Forwarded-For` we believe (the reverse proxy).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = proxy)]
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed to call the API from a browser; empty = same-origin only.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub cors_origins: Vec<String>,
    /// The URL clients reach the API at, for links we hand out; unset: the
    /// request's Host header over http.
    #[arg(long, env = "PUBLIC_BASE_URL", value_parser = http_url)]
    pub public_base_url: Option<Url>,
    /// Upper bound on how long a request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value = "30", value_parser = seconds)]
    pub request_timeout: Duration,
    #[command(flatten)]
    pub connections: ConnectionLimits,
}

/// Bounds on client connections to the API, applied before any request is
/// read (`http::serve`).
#[derive(Args, Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at once; past it a new one is answered 503 and closed.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value = "10000", value_parser = at_least::<usize>(1))]
    pub max_connections: usize,
    /// Open connections from one client address (429 past it). A trusted
    /// proxy's connections count only against `max_connections`.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_IP", default_value = "256", value_parser = at_least::<usize>(1))]
    pub max_connections_per_ip: usize,
    /// A request's header must arrive within this; an idle keep-alive
    /// connection is closed after it too.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_SECS", default_value = "10", value_parser = seconds)]
    pub header_read_timeout: Duration,
}

/// Postgres: the system of record and the job queue.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Database")]
pub struct DatabaseConfig {
    #[arg(
        id = "database-url", long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/docflow?sslmode=disable",
        value_parser = secret,
        hide_env_values = true
    )]
    pub url: SecretString,
    /// Connections one process keeps to Postgres at most.
    #[arg(id = "database-max-connections", long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", default_value = "20", value_parser = at_least::<u32>(1))]
    pub max_connections: u32,
}

/// Redis: rate limits, the token blocklist and live-status fan-out.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Redis")]
pub struct RedisConfig {
    /// `None` selects the in-process implementations (single node only).
    #[arg(id = "redis-url", long = "redis-url", env = "REDIS_URL", value_parser = secret, hide_env_values = true)]
    pub url: Option<SecretString>,
    /// Prefix of every Redis key we write, so several deployments (or test
    /// runs) can share one Redis without seeing each other's state.
    #[arg(
        id = "redis-key-prefix",
        long = "redis-key-prefix",
        env = "REDIS_KEY_PREFIX",
        default_value = "docflow:"
    )]
    pub key_prefix: String,
}

/// Accounts and tokens.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Auth")]
pub struct AuthConfig {
    /// The HS256 key of access, refresh and stream tokens and of download
    /// links.
    #[arg(long, env = "JWT_SECRET", value_parser = jwt_secret, hide_env_values = true)]
    pub jwt_secret: SecretSlice<u8>,
    /// Requests per minute per client IP to each of register, login and
    /// refresh.
    #[arg(id = "auth-rate-limit-per-minute", long = "auth-rate-limit-per-minute", env = "AUTH_RATE_LIMIT_PER_MINUTE", default_value = "10", value_parser = at_least::<u32>(1))]
    pub rate_limit_per_minute: u32,
}

/// Where uploaded bytes live, as written in the environment; `StorageConfig`
/// is what it resolves to.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Storage")]
pub struct StorageSettings {
    #[arg(id = "storage-url", long = "storage-url", env = "STORAGE_URL", default_value = "./data", value_parser = StorageUrl::parse)]
    pub url: StorageUrl,
    /// Custom endpoint for MinIO and friends; implies path-style addressing.
    #[arg(
        id = "s3-endpoint-url",
        long = "s3-endpoint-url",
        env = "S3_ENDPOINT_URL"
    )]
    pub endpoint: Option<String>,
    /// See `S3Config::public_endpoint`.
    #[arg(
        id = "s3-public-endpoint-url",
        long = "s3-public-endpoint-url",
        env = "S3_PUBLIC_ENDPOINT_URL"
    )]
    pub public_endpoint: Option<String>,
    #[arg(
        id = "s3-region",
        long = "s3-region",
        env = "S3_REGION",
        default_value = "us-east-1"
    )]
    pub region: String,
    #[arg(id = "aws-access-key-id", long = "aws-access-key-id", env = "AWS_ACCESS_KEY_ID", value_parser = secret, hide_env_values = true)]
    pub access_key_id: Option<SecretString>,
    #[arg(id = "aws-secret-access-key", long = "aws-secret-access-key", env = "AWS_SECRET_ACCESS_KEY", value_parser = secret, hide_env_values = true)]
    pub secret_access_key: Option<SecretString>,
}

impl StorageSettings {
    /// The storage these settings name.
    pub fn resolve(self) -> StorageConfig {
        match self.url {
            StorageUrl::Local(root) => StorageConfig::Local { root },
            StorageUrl::S3 { bucket } => StorageConfig::S3(S3Config {
                bucket,
                endpoint: self.endpoint,
                public_endpoint: self.public_endpoint,
                region: self.region,
                access_key_id: self.access_key_id,
                secret_access_key: self.secret_access_key,
            }),
        }
    }
}

/// A STORAGE_URL: a plain path, `file:///PATH` or `s3://BUCKET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUrl {
    Local(PathBuf),
    S3 { bucket: String },
}

impl StorageUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(bucket) = raw.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            if bucket.is_empty() || bucket.contains('/') {
                return Err("expected s3://BUCKET (no key prefix)".to_owned());
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
            });
        }
        if let Some(rest) = raw.strip_prefix("file://") {
            let url = Url::parse(raw).map_err(|e| e.to_string())?;
            return url
                .to_file_path()
                .map(Self::Local)
                .map_err(|()| format!("not a local path ({rest})"));
        }
        if raw.contains("://") {
            return Err("use file:///PATH, a plain path, or s3://BUCKET".to_owned());
        }
        Ok(Self::Local(PathBuf::from(raw)))
    }
}

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

/// What an upload may be, and how its bytes are handed back.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Uploads")]
pub struct UploadConfig {
    /// The upload cap the seed contract uses: 25 MiB.
    #[arg(id = "max-upload-bytes", long = "max-upload-bytes", env = "MAX_UPLOAD_BYTES", default_value = "26214400", value_parser = at_least::<u64>(1))]
    pub max_bytes: u64,
    /// Unset: every kind there is an extractor for.
    #[arg(
        id = "allowed-content-types", long = "allowed-content-types",
        env = "ALLOWED_CONTENT_TYPES",
        value_delimiter = ',',
        default_values_t = ContentKind::ALL
    )]
    pub allowed_content_types: Vec<ContentKind>,
    /// Uploads per minute per user.
    #[arg(id = "upload-rate-limit-per-minute", long = "upload-rate-limit-per-minute", env = "UPLOAD_RATE_LIMIT_PER_MINUTE", default_value = "30", value_parser = at_least::<u32>(1))]
    pub rate_limit_per_minute: u32,
    /// Upper bound on one upload request (a 25 MiB file on a slow link).
    #[arg(id = "upload-timeout-secs", long = "upload-timeout-secs", env = "UPLOAD_TIMEOUT_SECS", default_value = "300", value_parser = seconds)]
    pub timeout: Duration,
    /// Lifetime of download links; S3 caps presigned URLs at 7 days.
    #[arg(id = "download-url-ttl-secs", long = "download-url-ttl-secs", env = "DOWNLOAD_URL_TTL_SECS", default_value = "300", value_parser = seconds_within(7 * 24 * 3600))]
    pub download_url_ttl: Duration,
}

/// Jobs as the API creates them.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Jobs")]
pub struct JobConfig {
    /// Attempts per job, across retries, before it is failed for good.
    #[arg(id = "job-max-attempts", long = "job-max-attempts", env = "JOB_MAX_ATTEMPTS", default_value = "3", value_parser = at_least::<u32>(1))]
    pub max_attempts: u32,
    /// How long an Idempotency-Key keeps naming its job.
    #[arg(id = "idempotency-ttl-secs", long = "idempotency-ttl-secs", env = "IDEMPOTENCY_TTL_SECS", default_value = "86400", value_parser = seconds)]
    pub idempotency_ttl: Duration,
}

/// The queue consumer and its extractor processes.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Worker")]
pub struct WorkerConfig {
    /// Jobs one worker process runs at once.
    #[arg(id = "worker-concurrency", long = "worker-concurrency", env = "WORKER_CONCURRENCY", default_value = "64", value_parser = between::<usize>(1, 1024))]
    pub concurrency: usize,
    /// Jobs a worker claims beyond those it runs, to have the next at hand.
    /// Short jobs end faster than a claim's round trip, so the buffer is as
    /// large as the concurrency by default: 64 gave no-op runs 1.3–1.9× the
    /// throughput of 16, one claim statement serving 64 jobs instead of 40.
    #[arg(id = "worker-prefetch", long = "worker-prefetch", env = "WORKER_PREFETCH", default_value = "64", value_parser = between::<usize>(0, 1024))]
    pub prefetch: usize,
    /// A worker whose lease is not renewed for this long is gone; its runs
    /// are rescued.
    #[arg(id = "worker-lease-ttl-secs", long = "worker-lease-ttl-secs", env = "WORKER_LEASE_TTL_SECS", default_value = "6", value_parser = seconds)]
    pub lease_ttl: Duration,
    /// Jobs of one user running at once, across all workers. A lease counts
    /// until its run's end is committed, so runs waiting for the completer
    /// count too: at 256 one worker's own backlog of short runs stalled its
    /// claims.
    #[arg(id = "max-running-per-user", long = "max-running-per-user", env = "MAX_RUNNING_PER_USER", default_value = "1024", value_parser = at_least::<u32>(1))]
    pub max_running_per_user: u32,
    /// Where the worker serves /metrics and its health probes.
    #[arg(
        id = "worker-metrics-addr",
        long = "worker-metrics-addr",
        env = "WORKER_METRICS_ADDR",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub extractor: ExtractorConfig,
}

/// The warm extractor processes and the limits each document runs under.
#[derive(Args, Clone, Debug)]
pub struct ExtractorConfig {
    /// Extractor processes per worker (documents extracted at once); by
    /// default one per CPU.
    #[arg(id = "extractor-processes", long = "extractor-processes", env = "EXTRACTOR_PROCESSES", default_value_t = cpus(), value_parser = between::<usize>(1, 256))]
    pub processes: usize,
    /// Documents one extractor process serves before it is replaced.
    #[arg(id = "extractor-max-documents", long = "extractor-max-documents", env = "EXTRACTOR_MAX_DOCUMENTS", default_value = "500", value_parser = at_least::<u32>(1))]
    pub max_documents: u32,
    /// Address-space limit of one extractor process (at least 64 MiB).
    #[arg(id = "extractor-memory-bytes", long = "extractor-memory-bytes", env = "EXTRACTOR_MEMORY_BYTES", default_value = "2147483648", value_parser = at_least::<u64>(64 * 1024 * 1024))]
    pub memory_bytes: u64,
    /// CPU seconds one document may use in its extractor.
    #[arg(id = "extract-cpu-secs", long = "extract-cpu-secs", env = "EXTRACT_CPU_SECS", default_value = "120", value_parser = at_least::<u64>(1))]
    pub cpu_secs: u64,
    /// Wall-clock limit of one extraction (the child is killed past it).
    #[arg(id = "extract-timeout-secs", long = "extract-timeout-secs", env = "EXTRACT_TIMEOUT_SECS", default_value = "180", value_parser = seconds)]
    pub timeout: Duration,
}

/// OCR of images and of PDF pages without text.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "OCR")]
pub struct OcrConfig {
    /// Whether tesseract runs at all (a worker checks it is installed).
    #[arg(id = "tesseract-enabled", long = "tesseract-enabled", env = "TESSERACT_ENABLED", default_value = "true", value_parser = boolean, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Tesseract language codes joined by `+` (`eng+deu`), checked against
    /// `tesseract --list-langs` when a worker starts.
    #[arg(id = "ocr-languages", long = "ocr-languages", env = "OCR_LANGUAGES", default_value = "eng", value_parser = ocr_languages)]
    pub languages: OcrLanguages,
    /// Limit of one OCR run; past it the attempt fails as transient.
    #[arg(id = "ocr-timeout-secs", long = "ocr-timeout-secs", env = "OCR_TIMEOUT_SECS", default_value = "60", value_parser = seconds)]
    pub timeout: Duration,
    /// PDF pages read by OCR per document, at most.
    #[arg(id = "ocr-max-pages", long = "ocr-max-pages", env = "OCR_MAX_PAGES", default_value_t = docflow_extract::DEFAULT_OCR_MAX_PAGES)]
    pub max_pages: usize,
}

/// Live status streams (SSE).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Live")]
pub struct LiveConfig {
    /// The longest one stream stays open (the browser then reconnects with
    /// Last-Event-ID).
    #[arg(id = "sse-max-stream-secs", long = "sse-max-stream-secs", env = "SSE_MAX_STREAM_SECS", default_value = "60", value_parser = seconds)]
    pub max_stream: Duration,
    /// Interval of keepalive comments.
    #[arg(id = "sse-keepalive-secs", long = "sse-keepalive-secs", env = "SSE_KEEPALIVE_SECS", default_value = "15", value_parser = seconds)]
    pub keepalive: Duration,
    /// Streams one user may hold open in one API process.
    #[arg(id = "sse-max-streams-per-user", long = "sse-max-streams-per-user", env = "SSE_MAX_STREAMS_PER_USER", default_value = "32", value_parser = at_least::<usize>(1))]
    pub max_streams_per_user: usize,
    /// Streams one API process holds open in all.
    #[arg(id = "sse-max-streams", long = "sse-max-streams", env = "SSE_MAX_STREAMS", default_value = "10000", value_parser = at_least::<usize>(1))]
    pub max_streams: usize,
    /// Lifetime of a job-scoped stream token (for browsers' EventSource).
    #[arg(id = "stream-token-ttl-secs", long = "stream-token-ttl-secs", env = "STREAM_TOKEN_TTL_SECS", default_value = "60", value_parser = seconds)]
    pub stream_token_ttl: Duration,
}

/// Trace export.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryConfig {
    /// Where traces go (OTLP over HTTP); unset: no tracing export.
    #[arg(id = "otlp-endpoint", long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = http_url)]
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` of exported traces.
    #[arg(
        id = "otel-service-name",
        long = "otel-service-name",
        env = "OTEL_SERVICE_NAME",
        default_value = "docflow"
    )]
    pub service_name: String,
}

// Value parsers: each returns the reason a value is refused; the caller
// names the variable.

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw))
}

fn jwt_secret(raw: &str) -> Result<SecretSlice<u8>, String> {
    if raw.len() < MIN_JWT_SECRET_BYTES {
        return Err(format!(
            "must be at least {MIN_JWT_SECRET_BYTES} bytes (generate one with `openssl rand -base64 48`)"
        ));
    }
    Ok(SecretSlice::from(raw.as_bytes().to_vec()))
}

/// The longest any duration setting may be: a year. Time arithmetic on a
/// longer one (a token's expiry, an idempotency key's) could overflow.
const MAX_SECONDS: u64 = 366 * 24 * 3600;

fn seconds(raw: &str) -> Result<Duration, String> {
    between::<u64>(1, MAX_SECONDS)(raw).map(Duration::from_secs)
}

fn seconds_within(max: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |raw| between::<u64>(1, max)(raw).map(Duration::from_secs)
}

fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync,
    T::Err: fmt::Display,
{
    move |raw| {
        let value: T = raw.trim().parse().map_err(|e: T::Err| e.to_string())?;
        if value < min {
            return Err(format!("must be at least {min}"));
        }
        Ok(value)
    }
}

fn between<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync,
    T::Err: fmt::Display,
{
    move |raw| {
        let value = at_least(min)(raw)?;
        if value > max {
            return Err(format!("must be between {min} and {max}"));
        }
        Ok(value)
    }
}

fn boolean(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean (true/false)".to_owned()),
    }
}

fn ocr_languages(raw: &str) -> Result<OcrLanguages, String> {
    OcrLanguages::parse(raw).map_err(|invalid| invalid.reason)
}

fn http_url(raw: &str) -> Result<Url, String> {
    Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| "not an http(s) URL".to_owned())
}

fn origin(raw: &str) -> Result<String, String> {
    Url::parse(raw)
        .map(|_| raw.trim_end_matches('/').to_owned())
        .map_err(|e| format!("not an origin: {e}"))
}

fn proxy(entry: &str) -> Result<IpNet, String> {
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| "neither an IP address nor a CIDR range".to_owned())
}
