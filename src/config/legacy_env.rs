//! The original (Python) DocFlow's settings, recognised at start-up so a
//! migrated deployment is not silently misconfigured: what maps is mapped
//! (with an info line), what no longer exists gets a warning naming its
//! replacement. docs/migrating.md lists them.

/// What start-up says about one recognised variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Mapped onto our setting.
    Mapped(String),
    /// Ignored: the setting no longer exists.
    Ignored(String),
}

/// Variables of the original that mean nothing here, with what replaces
/// them.
const RETIRED: &[(&str, &str)] = &[
    (
        "CELERY_BROKER_URL",
        "jobs are queued in Postgres (the jobs table), there is no broker; remove it",
    ),
    (
        "CELERY_RESULT_BACKEND",
        "results are stored in Postgres (jobs.result); remove it",
    ),
    (
        "CELERY_WORKER_CONCURRENCY",
        "use WORKER_CONCURRENCY (runs per worker process) and EXTRACTOR_PROCESSES",
    ),
];

/// The value our setting `name` takes: its own variable, or the original's
/// equivalent (`lookup` reads the environment). Notes what it mapped.
pub fn resolve(
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    notes: &mut Vec<Note>,
) -> Option<String> {
    let own = lookup(name);
    match name {
        // The original named its bucket apart from the endpoint.
        "STORAGE_URL" if own.as_deref().is_none_or(|v| v.trim().is_empty()) => {
            let bucket = lookup("S3_BUCKET").filter(|b| !b.trim().is_empty())?;
            notes.push(Note::Mapped(format!(
                "S3_BUCKET={bucket} (the original's setting) read as STORAGE_URL=s3://{bucket}"
            )));
            Some(format!("s3://{bucket}"))
        }
        // SQLAlchemy URLs name their driver: postgresql+psycopg://…
        "DATABASE_URL" => own.map(|url| match postgres_url(&url) {
            Some(read) => {
                let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
                notes.push(Note::Mapped(format!(
                    "DATABASE_URL: the SQLAlchemy scheme {scheme}:// read as postgres://"
                )));
                read
            }
            None => url,
        }),
        _ => own,
    }
}

/// A SQLAlchemy URL (`postgresql+psycopg://…`) as a plain `postgres://` one;
/// `None` when it names no driver.
pub fn postgres_url(url: &str) -> Option<String> {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgresql+") => {
            Some(format!("postgres://{rest}"))
        }
        _ => None,
    }
}

/// Warnings for the original's variables that are set but retired.
pub fn retired(lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Note> {
    RETIRED
        .iter()
        .filter(|(name, _)| lookup(name).is_some())
        .map(|(name, instead)| Note::Ignored(format!("{name} is ignored: {instead}")))
        .collect()
}

/// Writes the notes to the log (after logging is set up).
pub fn log(notes: &[Note]) {
    for note in notes {
        match note {
            Note::Mapped(what) => {
                tracing::info!(setting = %what, "setting of the original DocFlow recognised")
            }
            Note::Ignored(what) => {
                tracing::warn!(setting = %what, "setting of the original DocFlow ignored")
            }
        }
    }
}
