//! Traces: `tracing` spans exported as OpenTelemetry spans over OTLP/HTTP
//! (protobuf), configured by the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`). With no endpoint nothing is built: [`enabled`]
//! is false, and the spans only traces need are never created.
//!
//! Context crosses processes as W3C `traceparent`: read from HTTP headers and
//! from the Socket.IO handshake's `auth`, and written into every topic event
//! published while a sampled span is current, so the node that delivers it
//! makes its delivery span a child of the publish.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The `tracing` layer that turns spans into OpenTelemetry spans.
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// Whether spans are exported (an OTLP endpoint is configured).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether spans are exported and a sampled one is current: the work at hand
/// belongs to a trace that will be kept (a request, an event), so a child span
/// for it is worth making. Background work (heartbeats, sweeps) makes no
/// traces of its own, and the children of a trace the sampler dropped cost
/// nothing.
#[inline]
pub fn in_trace() -> bool {
    enabled() && {
        let current = Span::current();
        !current.is_none() && current.context().span().span_context().is_sampled()
    }
}

/// Renames `span` (its name was set when it started: an HTTP span learns its
/// route only once routed).
pub fn rename(span: &Span, name: String) {
    if enabled() {
        span.context().span().update_name(name);
    }
}

/// The OTLP pipeline, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces one)
/// is set: the `tracing` layer to install and the provider to flush on exit.
/// `instance` names this process (`service.instance.id`).
pub fn pipeline<S>(instance: &str) -> Result<Option<(Layer<S>, Provider)>, String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    // The environment's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME)
    // wins over these defaults.
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance.to_owned()));
    if !set("OTEL_SERVICE_NAME") && !resource_names_service() {
        resource = resource.with_service_name("switchboard");
    }
    // The sampler comes from OTEL_TRACES_SAMPLER / _ARG (the SDK reads them);
    // unset, every trace is kept unless its parent says otherwise.
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("switchboard");
    ENABLED.store(true, Ordering::Relaxed);
    // No source location, thread, target or busy/idle time on every span: they
    // cost an allocation or a clock read per span, sampled or not. Nothing here
    // reads OpenTelemetry's own current context (parents come from `tracing`'s
    // spans), so entering a span need not set it.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false);
    Ok(Some((layer, Provider(provider))))
}

fn resource_names_service() -> bool {
    std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .is_ok_and(|v| v.split(',').any(|kv| kv.trim_start().starts_with("service.name=")))
}

/// The tracer provider: flushes what is buffered when the process ends.
#[derive(Debug)]
pub struct Provider(SdkTracerProvider);

impl Provider {
    pub fn shutdown(&self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "traces could not all be exported at shutdown");
        }
    }
}

struct One<'a>(&'a str, Option<&'a str>);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.0),
            "tracestate" => self.1,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes `span` a child of the remote span `traceparent` names (W3C format),
/// when tracing is on and it parses; anything else is ignored.
pub fn set_parent(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| enabled()) else { return };
    let cx = TraceContextPropagator::new().extract(&One(traceparent, tracestate));
    if cx.span().span_context().is_remote() {
        let _ = span.set_parent(cx);
    }
}

/// The current span as a W3C `traceparent`, when tracing is on and the span
/// is sampled.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx: Context = Span::current().context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled())
        .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// Puts the span's trace and span ids on it as `trace_id` and `span_id` (fields
/// it declares empty), so its log lines can be found from the trace; only when
/// the trace is sampled (an id of a dropped trace leads nowhere).
pub fn stamp_ids(span: &Span) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() && sc.is_sampled() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}
