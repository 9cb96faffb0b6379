//! One traced request into the host: the root span it opens, the calls made inside it,
//! and its end.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{ComponentNamedList, Lift, Lower, Val};

use super::{CallError, ComponentHost, PluginComponent};
use crate::tracing_capability::{Exception, IncomingContext, ProgressSink, RequestScope};

/// A traced request into the host: the root span it opens and the context it continues.
#[derive(Clone)]
pub struct Request {
    /// Root span name (`mcp.recall_episodes`, ...).
    pub name: Cow<'static, str>,
    /// Root span kind (SERVER at the MCP edge).
    pub kind: SpanKind,
    /// Root span attributes.
    pub attributes: Vec<KeyValue>,
    /// The remote parent, when the caller sent one.
    pub parent: Option<IncomingContext>,
    /// The W3C `baggage` the caller sent.
    pub baggage: Option<String>,
    /// Where the components' progress reports go.
    pub progress: Option<ProgressSink>,
    /// Cancelled when the client cancels the request or goes away: components see it
    /// (`progress.cancelled`) and stop their long operations at the next step.
    pub cancellation: Option<CancellationToken>,
    /// Root span attributes added when the request fails (see
    /// [`RequestCall::set_error_code`]): what a failure means to the caller's protocol.
    pub failure_attributes: Vec<KeyValue>,
    /// Told how the request ended, once its root span has ended.
    pub on_end: Option<EndObserver>,
}

/// How a request ended, as its [`EndObserver`] sees it.
#[derive(Debug)]
pub struct RequestEnd<'a> {
    /// The root span's context (for a metric's exemplar); `None` when no span was made.
    pub root: Option<&'a SpanContext>,
    /// From [`ComponentHost::begin`] to the end of the root span.
    pub elapsed: Duration,
    /// The code [`RequestCall::set_error_code`] gave, when the request failed.
    pub error_code: Option<&'static str>,
}

/// Called once a request's root span has ended (so tail sampling has decided its trace):
/// the MCP gateway records its tool metrics this way.
pub type EndObserver = Arc<dyn Fn(&RequestEnd<'_>) + Send + Sync>;

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A SERVER request span named `name`, with no remote parent.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            kind: SpanKind::Server,
            attributes: Vec::new(),
            parent: None,
            baggage: None,
            progress: None,
            cancellation: None,
            failure_attributes: Vec::new(),
            on_end: None,
        }
    }

    /// Add `attribute` to the root span if the request fails.
    pub fn with_failure_attribute(mut self, attribute: KeyValue) -> Self {
        self.failure_attributes.push(attribute);
        self
    }

    /// Tell `observer` how the request ended.
    pub fn on_end(mut self, observer: EndObserver) -> Self {
        self.on_end = Some(observer);
        self
    }

    /// Send the components' progress reports to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Let `token` cancel the request.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancellation = Some(token);
        self
    }

    /// Continue the trace of a `traceparent` received from the caller.
    pub fn with_parent(mut self, parent: IncomingContext) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Carry the caller's W3C baggage.
    pub fn with_baggage(mut self, baggage: impl Into<String>) -> Self {
        self.baggage = Some(baggage.into());
        self
    }

    /// Add a root span attribute.
    pub fn with_attribute(mut self, attribute: KeyValue) -> Self {
        self.attributes.push(attribute);
        self
    }
}

impl ComponentHost {
    /// Serve one request: open its root span (under the caller's `traceparent` when
    /// given), call `interface#function` on the component that exports it, and end every
    /// span the request left open. A failure marks the root span ERROR with an
    /// `exception` event.
    pub async fn invoke(
        &self,
        request: Request,
        interface: &str,
        function: &str,
        params: &[Val],
    ) -> Result<Vec<Val>, CallError> {
        self.begin(request)
            .invoke(interface, function, params)
            .await
    }

    /// Open a request's root span; calls made through the returned [`RequestCall`] run
    /// inside it, and it ends (with whatever guests left open) when that is dropped.
    pub fn begin(&self, request: Request) -> RequestCall<'_> {
        let mut scope = RequestScope::new(
            self.telemetry.clone(),
            request.parent.as_ref(),
            request.baggage.as_deref(),
        );
        scope.set_progress(request.progress);
        scope.set_cancellation(request.cancellation);
        let root = scope.start(None, request.name, request.kind, request.attributes, None);
        RequestCall {
            host: self,
            scope: Some(scope),
            root,
            started: Instant::now(),
            failure_attributes: request.failure_attributes,
            on_end: request.on_end,
            error: None,
        }
    }
}

/// One request in progress: its scope and root span. Dropping it ends the request.
pub struct RequestCall<'h> {
    host: &'h ComponentHost,
    scope: Option<RequestScope>,
    root: u64,
    started: Instant,
    failure_attributes: Vec<KeyValue>,
    on_end: Option<EndObserver>,
    /// The failure's code, for the end observer.
    error: Option<&'static str>,
}

impl RequestCall<'_> {
    /// The component serving `interface`, or the error (recorded on the root span).
    fn target(&mut self, interface: &str) -> Result<Arc<PluginComponent>, CallError> {
        match self.host.exporters.get(interface) {
            Some(target) => Ok(target.clone()),
            None => {
                let error = CallError::NoExporter {
                    interface: interface.to_owned(),
                };
                self.record(&error);
                Err(error)
            }
        }
    }

    fn record(&mut self, error: &CallError) {
        if let Some(scope) = &mut self.scope {
            scope.record_exception(&None, self.root, error.exception());
        }
    }

    fn take_scope(&mut self) -> RequestScope {
        self.scope
            .take()
            .unwrap_or_else(|| RequestScope::new(self.host.telemetry.clone(), None, None))
    }

    fn settle<T>(
        &mut self,
        (scope, result): (RequestScope, Result<T, CallError>),
    ) -> Result<T, CallError> {
        self.scope = Some(scope);
        if let Err(error) = &result {
            self.record(error);
        }
        result
    }

    /// Call with dynamically typed values.
    pub async fn invoke(
        &mut self,
        interface: &str,
        function: &str,
        params: &[Val],
    ) -> Result<Vec<Val>, CallError> {
        let target = self.target(interface)?;
        let scope = self.take_scope();
        let outcome = target.call(scope, interface, function, params).await;
        self.settle(outcome)
    }

    /// Call with the Rust types generated from the WIT.
    pub async fn invoke_typed<P, R>(
        &mut self,
        interface: &str,
        function: &str,
        params: P,
    ) -> Result<R, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync + 'static,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let target = self.target(interface)?;
        let scope = self.take_scope();
        let outcome = target.call_typed(scope, interface, function, params).await;
        self.settle(outcome)
    }

    /// Add attributes to the root span.
    pub fn annotate(&mut self, attributes: Vec<KeyValue>) {
        if let Some(scope) = &mut self.scope {
            scope.set_attributes(&None, self.root, attributes);
        }
    }

    /// Whether the request was cancelled (see [`Request::with_cancellation`]).
    pub fn is_cancelled(&self) -> bool {
        self.scope.as_ref().is_some_and(RequestScope::is_cancelled)
    }

    /// Say how the request failed (a low-cardinality code): it reaches the end observer,
    /// and the request's failure attributes are added to the root span.
    pub fn set_error_code(&mut self, code: &'static str) {
        self.error = Some(code);
        let attributes = std::mem::take(&mut self.failure_attributes);
        if !attributes.is_empty() {
            self.annotate(attributes);
        }
    }

    /// Mark the root span failed, with an `exception` event.
    pub fn fail(&mut self, exception: Exception) {
        if let Some(scope) = &mut self.scope {
            scope.record_exception(&None, self.root, exception);
        }
    }
}

impl Drop for RequestCall<'_> {
    fn drop(&mut self) {
        // Ends what guests left open, innermost first, then the root.
        let Some(scope) = self.scope.take() else {
            return;
        };
        let root = self
            .on_end
            .as_ref()
            .and_then(|_| scope.span_context(self.root).cloned());
        scope.finish();
        if let Some(observer) = self.on_end.take() {
            observer(&RequestEnd {
                root: root.as_ref(),
                elapsed: self.started.elapsed(),
                error_code: self.error,
            });
        }
    }
}
