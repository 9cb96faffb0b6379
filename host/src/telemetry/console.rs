//! Console export: each finished trace printed as an indented tree with durations.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Traces whose root has not ended yet, at most. Beyond it the oldest partial trace is
/// printed as it is, so a leaked root cannot grow memory without bound.
const MAX_PENDING_TRACES: usize = 1024;

/// Longest attribute value printed, in characters.
const MAX_PRINTED_VALUE_CHARS: usize = 80;

/// Where the tree goes: stderr in the server (stdout carries MCP), a buffer in tests.
pub type ConsoleSink = Arc<Mutex<dyn Write + Send>>;

/// Buffers the spans of each trace until its local root ends, then prints the tree.
pub struct ConsoleTreeExporter {
    sink: ConsoleSink,
    pending: Mutex<PendingTraces>,
}

#[derive(Default)]
struct PendingTraces {
    traces: HashMap<TraceId, Vec<SpanData>>,
    arrival: Vec<TraceId>,
}

impl std::fmt::Debug for ConsoleTreeExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleTreeExporter")
    }
}

impl ConsoleTreeExporter {
    /// Print to `sink`.
    pub fn new(sink: ConsoleSink) -> Self {
        Self {
            sink,
            pending: Mutex::new(PendingTraces::default()),
        }
    }

    /// Print to stderr.
    pub fn stderr() -> Self {
        Self::new(Arc::new(Mutex::new(std::io::stderr())))
    }

    fn accept(&self, batch: Vec<SpanData>) -> Vec<Vec<SpanData>> {
        let mut complete = Vec::new();
        let Ok(mut pending) = self.pending.lock() else {
            return complete;
        };
        for span in batch {
            let trace_id = span.span_context.trace_id();
            let is_local_root =
                span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
            if !pending.traces.contains_key(&trace_id) {
                pending.arrival.push(trace_id);
            }
            pending.traces.entry(trace_id).or_default().push(span);
            if is_local_root {
                if let Some(spans) = pending.traces.remove(&trace_id) {
                    complete.push(spans);
                }
                pending.arrival.retain(|t| *t != trace_id);
            }
        }
        while pending.traces.len() > MAX_PENDING_TRACES {
            let oldest = pending.arrival.remove(0);
            if let Some(spans) = pending.traces.remove(&oldest) {
                complete.push(spans);
            }
        }
        complete
    }
}

impl SpanExporter for ConsoleTreeExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        for trace in self.accept(batch) {
            let text = render_trace(trace);
            if let Ok(mut sink) = self.sink.lock() {
                // Best effort: a closed stderr must not fail the pipeline.
                let _ = sink.write_all(text.as_bytes());
                let _ = sink.flush();
            }
        }
        Ok(())
    }
}

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "CLIENT",
        SpanKind::Server => "SERVER",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Internal => "INTERNAL",
    }
}

fn format_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

fn format_value(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{:?}", s.as_str()),
        Value::Array(Array::String(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|s| format!("{:?}", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_PRINTED_VALUE_CHARS {
        let cut: String = text.chars().take(MAX_PRINTED_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Render one trace: the roots (spans whose parent is not in the trace) first, children
/// under their parents in start order; names, kinds and durations in aligned columns.
pub fn render_trace(mut spans: Vec<SpanData>) -> String {
    spans.sort_by_key(|s| s.start_time);
    let ids: std::collections::HashSet<SpanId> =
        spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<SpanId, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        if ids.contains(&span.parent_span_id) {
            children.entry(span.parent_span_id).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let mut rows = Vec::new();
    for (n, root) in roots.iter().enumerate() {
        collect_rows(
            &spans,
            &children,
            *root,
            "",
            n + 1 == roots.len(),
            true,
            &mut rows,
        );
    }
    let width = rows
        .iter()
        .filter_map(|r| match r {
            Row::Span { label, .. } => Some(label.chars().count()),
            Row::Line(_) => None,
        })
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    if let Some(first) = spans.first() {
        let _ = writeln!(out, "trace {}", first.span_context.trace_id());
    }
    for row in rows {
        match row {
            Row::Span { label, detail } => {
                let pad = width - label.chars().count();
                let _ = writeln!(out, "{label}{:pad$}  {detail}", "");
            }
            Row::Line(line) => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

enum Row {
    Span { label: String, detail: String },
    Line(String),
}

fn collect_rows(
    spans: &[SpanData],
    children: &HashMap<SpanId, Vec<usize>>,
    index: usize,
    prefix: &str,
    last: bool,
    root: bool,
    rows: &mut Vec<Row>,
) {
    let Some(span) = spans.get(index) else {
        return;
    };
    let branch = match (root, last) {
        (true, _) => "",
        (false, true) => "└─ ",
        (false, false) => "├─ ",
    };
    let duration = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default();
    let mut detail = format!(
        "{:<9}{:>10}",
        kind_name(&span.span_kind),
        format_duration(duration)
    );
    if let Status::Error { description } = &span.status {
        let _ = write!(detail, "  ERROR {description:?}");
    }
    for kv in &span.attributes {
        let _ = write!(detail, "  {}={}", kv.key, format_value(&kv.value));
    }
    rows.push(Row::Span {
        label: format!("{prefix}{branch}{}", span.name),
        detail,
    });
    let child_prefix = match (root, last) {
        (true, _) => prefix.to_owned(),
        (false, true) => format!("{prefix}   "),
        (false, false) => format!("{prefix}│  "),
    };
    let kids = children.get(&span.span_context.span_id());
    let event_prefix = if kids.is_some() {
        format!("{child_prefix}│  ")
    } else {
        format!("{child_prefix}   ")
    };
    for event in span.events.iter() {
        let attrs: Vec<String> = event
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, format_value(&kv.value)))
            .collect();
        rows.push(Row::Line(format!(
            "{event_prefix}· {} {}",
            event.name,
            attrs.join(" ")
        )));
    }
    if let Some(kids) = kids {
        for (n, kid) in kids.iter().enumerate() {
            collect_rows(
                spans,
                children,
                *kid,
                &child_prefix,
                n + 1 == kids.len(),
                false,
                rows,
            );
        }
    }
}
