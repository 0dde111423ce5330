//! Structured logs: one JSON object per line, with `timestamp`, `level`,
//! `target`, `message`, the `request_id` of the request being served (if any)
//! and every other field of the event and its enclosing spans under `fields`.
//!
//! tracing-subscriber's own JSON format nests span fields under `span` and
//! `spans`; log pipelines want `request_id` at the top, hence this layer.

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{EnvFilter, Layer, layer::Context, prelude::*, registry::LookupSpan};

/// Installs the global subscriber. The filter comes from `RUST_LOG`
/// (default `info`, and `warn` for chatty dependencies).
pub fn init() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,fred=warn,hyper=warn,h2=warn"));
        let _ = tracing_subscriber::registry()
            .with(JsonLines::new(std::io::stdout))
            .with(filter)
            .try_init();
    });
}

/// Writes each event as one JSON line to the writer `make_writer` returns.
pub struct JsonLines<W> {
    make_writer: Mutex<W>,
}

impl<W> JsonLines<W> {
    pub fn new(make_writer: W) -> Self {
        Self {
            make_writer: Mutex::new(make_writer),
        }
    }
}

/// The fields recorded on a span so far, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, W, O> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        // Outermost span first, so inner spans and the event itself win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut fields));

        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        line.insert("target".into(), Value::from(metadata.target()));
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or(Value::from("")),
        );
        if let Some(request_id) = fields.remove("request_id") {
            line.insert("request_id".into(), request_id);
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }

        let Ok(mut encoded) = serde_json::to_vec(&Value::Object(line)) else {
            return;
        };
        encoded.push(b'\n');
        let make_writer = self.make_writer.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line so concurrent lines never interleave.
        let _ = make_writer().write_all(&encoded);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_json_object_per_line_with_request_id_on_top() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLines::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "req-1", route = "unmatched");
            let _guard = span.enter();
            span.record("route", "/api/v1/auth/me");
            tracing::info!(status = 200_u64, "request completed");
            tracing::warn!("second\nline");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "request completed");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["request_id"], "req-1");
        assert_eq!(lines[0]["fields"]["status"], 200);
        assert_eq!(lines[0]["fields"]["route"], "/api/v1/auth/me");
        assert!(lines[0]["timestamp"].as_str().expect("ts").ends_with('Z'));
        assert_eq!(lines[1]["message"], "second\nline");
    }
}
