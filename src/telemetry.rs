//! Structured logs and traces.
//!
//! Logs: one JSON object per line, with `timestamp`, `level`, `target`,
//! `message`, the `request_id` of the request being served (if any), the
//! `trace_id` of the active span, and every other field of the event and its
//! enclosing spans under `fields`. tracing-subscriber's own JSON format nests
//! span fields under `span` and `spans`; log pipelines want `request_id` at
//! the top, hence this layer.
//!
//! Traces: tracing spans become OpenTelemetry spans (tracing-opentelemetry),
//! exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set. Trace
//! context crosses the queue as the W3C `traceparent` stored with each job:
//! the API records its request span's, the worker parents its run on it.

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::Context, prelude::*, registry::LookupSpan};

/// Flushes buffered spans when the process ends.
pub struct TelemetryGuard(SdkTracerProvider);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// Installs the global subscriber: JSON logs to stdout and, when `otlp` is
/// set, span export to that collector (OTLP over HTTP). Spans carry trace
/// ids either way, so logs and stored `traceparent`s always have them.
/// Must run outside the async runtime (the exporter's HTTP client blocks).
pub fn init(otlp: Option<&url::Url>, service_name: &str) -> TelemetryGuard {
    crate::install_crypto_provider();
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    if let Some(endpoint) = otlp {
        use opentelemetry_otlp::WithExportConfig;
        let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces)
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
        {
            Ok(exporter) => provider = provider.with_batch_exporter(exporter),
            Err(err) => eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces: {err}"),
        }
    }
    let provider = provider.build();
    install(&provider, true);
    TelemetryGuard(provider)
}

/// Installs the global subscriber around `provider` (tests bring one with
/// an in-memory exporter, and may leave the JSON log lines out). The filter
/// comes from `RUST_LOG` (default `info`, and `warn` for chatty
/// dependencies).
pub fn install(provider: &SdkTracerProvider, json_logs: bool) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,fred=warn,hyper=warn,h2=warn"));
        let tracer = provider.tracer("docflow");
        let _ = tracing_subscriber::registry()
            .with(json_logs.then(|| JsonLines::new(std::io::stdout)))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                        // aide instruments how it builds the OpenAPI
                        // document (api_route, get_with, response_with, …):
                        // dozens of start-up spans that say nothing about
                        // requests or jobs.
                        !meta.target().starts_with("aide")
                    })),
            )
            .with(filter)
            .try_init();
    });
}

/// Makes `span` continue the caller's trace when the request carries a
/// valid W3C `traceparent`.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderCarrier(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
}

/// The current span's W3C `traceparent`, to be stored with a job.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Parents `span` on a stored `traceparent` (ignored when malformed).
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of the current span, for log lines.
fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct HeaderCarrier<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
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
        if ctx.event_span(event).is_some()
            && let Some(trace_id) = current_trace_id()
        {
            line.insert("trace_id".into(), Value::from(trace_id));
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
