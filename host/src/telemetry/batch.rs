//! A batching span processor that runs its exports on the host's Tokio runtime.
//!
//! Why not the SDK's `BatchSpanProcessor`: it exports from its own thread with a
//! futures executor, where the tonic exporter has no reactor (the known "no reactor
//! running" failure), and it does not expose how many spans it exported or dropped, which
//! `memory_stats` reports. This one never blocks the caller: `on_end` pushes onto a
//! lock-free bounded queue (a full queue drops the span and counts it), and wakes the
//! export task only when a whole batch is waiting; otherwise the task wakes on its timer.
//! Waking it for every span would cost a futex syscall per span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, oneshot};

use super::config::BatchConfig;

/// How often a synchronous flush outside any runtime looks for the worker's answer: the
/// SDK's `force_flush` is not async, and a millisecond is below any export's latency.
const FLUSH_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// How often at most a "spans dropped" warning is logged.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one export pipeline has done so far.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Spans the exporter accepted.
    pub exported: AtomicU64,
    /// Spans lost: queue full, or their export failed.
    pub dropped: AtomicU64,
    /// Export calls that failed or timed out.
    pub failed_exports: AtomicU64,
}

enum Control {
    SetResource(Resource),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle through which the host flushes and reads one pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// What it exports to, for logs and `memory_stats`.
    pub description: String,
    /// Its counters.
    pub counters: Arc<ExportCounters>,
    control: mpsc::UnboundedSender<Control>,
}

impl Pipeline {
    /// Export everything queued so far; returns once the exporter has answered.
    pub async fn flush(&self) {
        self.request(Control::Flush).await;
    }

    /// Flush, then stop the worker and shut the exporter down.
    pub async fn shutdown(&self) {
        self.request(Control::Shutdown).await;
    }

    async fn request(&self, make: fn(oneshot::Sender<()>) -> Control) {
        request(&self.control, make).await;
    }
}

/// Send a worker task a request carrying an acknowledgement, and wait for it (not at all
/// if the task is gone).
pub(super) async fn request<C>(
    control: &mpsc::UnboundedSender<C>,
    make: fn(oneshot::Sender<()>) -> C,
) {
    let (tx, rx) = oneshot::channel();
    if control.send(make(tx)).is_ok() {
        let _ = rx.await;
    }
}

/// Finished spans waiting for export, shared by the processor and its task.
struct SpanQueue {
    spans: ArrayQueue<SpanData>,
    batch_size: usize,
    /// Set once a full batch is waiting and the task was told; cleared by the task.
    signalled: std::sync::atomic::AtomicBool,
    batch_ready: Notify,
}

impl std::fmt::Debug for SpanQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanQueue")
            .field("len", &self.spans.len())
            .finish()
    }
}

/// The span processor half, owned by the tracer provider.
#[derive(Debug)]
pub struct BatchProcessor {
    queue: Arc<SpanQueue>,
    pipeline: Pipeline,
    export_timeout: Duration,
}

impl BatchProcessor {
    /// Start a worker task on `runtime` exporting through `exporter`.
    pub fn spawn<E: SpanExporter + 'static>(
        exporter: E,
        config: &BatchConfig,
        description: String,
        runtime: &Handle,
    ) -> (Self, Pipeline) {
        let queue = Arc::new(SpanQueue {
            spans: ArrayQueue::new(config.max_queue_size),
            batch_size: config.max_export_batch_size,
            signalled: std::sync::atomic::AtomicBool::new(false),
            batch_ready: Notify::new(),
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(ExportCounters::default());
        let pipeline = Pipeline {
            description,
            counters: counters.clone(),
            control: control_tx,
        };
        let worker = Worker {
            exporter,
            queue: queue.clone(),
            control: control_rx,
            counters,
            batch_size: config.max_export_batch_size,
            delay: config.scheduled_delay,
            timeout: config.export_timeout,
            description: pipeline.description.clone(),
            last_drop_log: None,
            dropped_at_last_log: 0,
        };
        runtime.spawn(worker.run());
        let processor = Self {
            queue,
            pipeline: pipeline.clone(),
            export_timeout: config.export_timeout,
        };
        (processor, pipeline)
    }

    /// Send a control request from synchronous code. Used only by the SDK's own
    /// `force_flush`/`shutdown` paths (the host uses [`Pipeline`]). Inside a runtime it
    /// does not wait: blocking a runtime thread on its own worker could deadlock.
    fn blocking_request(&self, make: fn(oneshot::Sender<()>) -> Control) -> OTelSdkResult {
        let (tx, rx) = oneshot::channel();
        self.pipeline
            .control
            .send(make(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        if Handle::try_current().is_ok() {
            return Ok(());
        }
        let deadline = Instant::now() + self.export_timeout;
        let mut rx = rx;
        loop {
            match rx.try_recv() {
                Ok(()) => return Ok(()),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(OTelSdkError::AlreadyShutdown);
                }
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Err(OTelSdkError::Timeout(self.export_timeout));
                }
                Err(oneshot::error::TryRecvError::Empty) => std::thread::sleep(FLUSH_POLL_INTERVAL),
            }
        }
    }
}

impl SpanProcessor for BatchProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let queue = &self.queue;
        if queue.spans.push(span).is_err() {
            self.pipeline
                .counters
                .dropped
                .fetch_add(1, Ordering::Relaxed);
        } else if queue.spans.len() >= queue.batch_size
            && !queue.signalled.swap(true, Ordering::AcqRel)
        {
            queue.batch_ready.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.blocking_request(Control::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.blocking_request(Control::Shutdown)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self
            .pipeline
            .control
            .send(Control::SetResource(resource.clone()));
    }
}

struct Worker<E> {
    exporter: E,
    queue: Arc<SpanQueue>,
    control: mpsc::UnboundedReceiver<Control>,
    counters: Arc<ExportCounters>,
    batch_size: usize,
    delay: Duration,
    timeout: Duration,
    description: String,
    last_drop_log: Option<Instant>,
    dropped_at_last_log: u64,
}

impl<E: SpanExporter> Worker<E> {
    async fn run(mut self) {
        let mut deadline = tokio::time::Instant::now() + self.delay;
        loop {
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::SetResource(resource)) => self.exporter.set_resource(&resource),
                    Some(Control::Flush(ack)) => {
                        self.drain().await;
                        let _ = ack.send(());
                    }
                    Some(Control::Shutdown(ack)) => {
                        self.drain().await;
                        let _ = self.exporter.shutdown();
                        let _ = ack.send(());
                        return;
                    }
                    // Every handle is gone: nothing can queue or flush any more.
                    None => {
                        self.drain().await;
                        return;
                    }
                },
                () = self.queue.batch_ready.notified() => {
                    self.queue.signalled.store(false, Ordering::Release);
                    self.export_full_batches().await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.drain().await;
                    deadline = tokio::time::Instant::now() + self.delay;
                    // Spans dropped on a full queue are only counted on the hot path;
                    // say so here, off it.
                    if self.counters.dropped.load(Ordering::Relaxed) > self.dropped_at_last_log {
                        self.log_drop("the span queue was full");
                    }
                }
            }
        }
    }

    /// Take up to one batch off the queue.
    fn take_batch(&self) -> Vec<SpanData> {
        let mut batch = Vec::with_capacity(self.batch_size.min(self.queue.spans.len()));
        while batch.len() < self.batch_size {
            match self.queue.spans.pop() {
                Some(span) => batch.push(span),
                None => break,
            }
        }
        batch
    }

    /// Export whole batches while there are some; a partial batch waits for the timer.
    async fn export_full_batches(&mut self) {
        while self.queue.spans.len() >= self.batch_size {
            let batch = self.take_batch();
            self.export(batch).await;
        }
    }

    /// Export everything queued, in batches.
    async fn drain(&mut self) {
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                return;
            }
            self.export(batch).await;
        }
    }

    async fn export(&mut self, spans: Vec<SpanData>) {
        let count = spans.len() as u64;
        match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
            Ok(Ok(())) => {
                self.counters.exported.fetch_add(count, Ordering::Relaxed);
            }
            outcome => {
                self.counters.dropped.fetch_add(count, Ordering::Relaxed);
                self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                let reason = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", self.timeout),
                };
                self.log_drop(&reason);
            }
        }
    }

    /// One warning per interval, with the count since the last one.
    fn log_drop(&mut self, reason: &str) {
        let now = Instant::now();
        if self
            .last_drop_log
            .is_some_and(|last| now.duration_since(last) < DROP_LOG_INTERVAL)
        {
            return;
        }
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        tracing::warn!(
            "span export to {} failed ({reason}); {} spans dropped since the last report, {dropped} in all",
            self.description,
            dropped - self.dropped_at_last_log,
        );
        self.last_drop_log = Some(now);
        self.dropped_at_last_log = dropped;
    }
}
