//! Linking one component's imports to another component's exports, with a CLIENT
//! boundary span around each call.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind};
use wasmtime::component::types::{ComponentFunc, Type};
use wasmtime::component::{Linker, Val};

use super::component::{ComponentState, PluginComponent};
use super::spec::Role;
use crate::telemetry::metrics::{AttrValue, Attributes, HostInstrument, Metrics, Point};
use crate::tracing_capability::{Outcome, RequestScope};

/// Route every function of `interface`, imported by `caller`, to `target`'s export of it.
pub fn route_interface(
    linker: &mut Linker<ComponentState>,
    caller: &Arc<str>,
    interface: &str,
    functions: &[String],
    target: &Arc<PluginComponent>,
) -> wasmtime::Result<()> {
    let mut instance = linker.instance(interface)?;
    for function in functions {
        // Shared strings: the attributes are cloned for every call, and cloning an
        // `Arc<str>` value is a count, where an owned one is an allocation and a copy.
        let mut attributes = vec![
            KeyValue::new("ww.component", shared(target.name())),
            KeyValue::new("ww.caller", caller.clone()),
            KeyValue::new("ww.interface", shared(interface)),
            KeyValue::new("ww.function", shared(function)),
        ];
        let role = Role::of_interface(interface);
        attributes.extend(role_attributes(role, target.name(), function));
        // A remote adapter: where the calls go.
        if let Some(endpoint) = target.endpoint() {
            attributes.push(KeyValue::new("server.address", shared(&endpoint.host)));
            attributes.push(KeyValue::new("server.port", i64::from(endpoint.port)));
        }
        // Store operations are measured from the caller's side, like the boundary span,
        // with the span's own attributes that name the store and the operation.
        let store_metric = match (role, target.telemetry().metrics()) {
            (Some(Role::VectorStore | Role::GraphStore), Some(metrics)) => {
                Some(StoreMetric::new(metrics.clone(), &attributes))
            }
            _ => None,
        };
        let route = Arc::new(Route {
            span_name: format!("{}.{function}", target.name()),
            role,
            store_metric,
            attributes,
            interface: interface.to_owned(),
            function: function.clone(),
            target: target.clone(),
        });
        instance.func_new_async(function, move |mut store, ty, params, results| {
            let route = route.clone();
            Box::new(async move {
                let tracing = &mut store.data_mut().tracing;
                let scope = tracing.scope_mut();
                // Attributes cost allocations: only for a span that is recorded.
                let attributes = if scope.telemetry().is_recording() {
                    let mut attributes = route.attributes.clone();
                    call_attributes(route.role, params, &mut attributes);
                    attributes
                } else {
                    Vec::new()
                };
                let started = std::time::Instant::now();
                let boundary = scope.start(
                    None,
                    Cow::Owned(route.span_name.clone()),
                    SpanKind::Client,
                    attributes,
                    None,
                );
                let context = route
                    .store_metric
                    .as_ref()
                    .and_then(|_| scope.current().cloned());
                let placeholder = RequestScope::new(scope.telemetry().clone(), None, None);
                let scope = tracing.leave(placeholder);
                let (mut scope, outcome) = route
                    .target
                    .call(scope, &route.interface, &route.function, params)
                    .await;
                if let Some(metric) = &route.store_metric {
                    let seconds = started.elapsed().as_secs_f64();
                    metric.record(seconds, error_type(&outcome), context.as_ref());
                }
                let result = match outcome {
                    Ok(values) if values.len() == results.len() => {
                        results.clone_from_slice(&values);
                        scope.end(&None, boundary, Outcome::Unset, vec![], vec![], None);
                        Ok(())
                    }
                    Ok(values) => {
                        let message = format!(
                            "{} returned {} values where {} were expected",
                            route.span_name,
                            values.len(),
                            results.len()
                        );
                        scope.end(
                            &None,
                            boundary,
                            Outcome::Error(message.clone()),
                            vec![],
                            vec![],
                            None,
                        );
                        Err(wasmtime::format_err!(message))
                    }
                    Err(error) => {
                        let exception = error.exception();
                        scope.end(
                            &None,
                            boundary,
                            Outcome::Error(error.to_string()),
                            vec![],
                            vec![],
                            Some(exception),
                        );
                        // The callee trapped (and was discarded). A function that
                        // returns a `result` gives its caller the error case instead,
                        // so the fault stays where it happened; one that cannot say
                        // "failed" leaves the caller nothing to return, and it traps too.
                        match (trapped_result(&ty, route.role, &error.to_string()), results) {
                            (Some(value), [only]) => {
                                *only = value;
                                Ok(())
                            }
                            _ => Err(wasmtime::Error::from(error)),
                        }
                    }
                };
                store.data_mut().tracing.enter(scope);
                result
            })
        })?;
    }
    Ok(())
}

/// What a caller gets in place of the result of a call whose callee trapped: the `Err`
/// of the function's `result`, carrying `message` in the error type's case for the
/// callee's role (`storage` for a store, `embedding` for an embedder; otherwise the first
/// of `internal`, `unavailable`, `storage`, `embedding` the type has), or as the error
/// itself when it is a string. `None` when the function returns no `result`, or its
/// error type has no such case.
fn trapped_result(ty: &ComponentFunc, role: Option<Role>, message: &str) -> Option<Val> {
    let mut results = ty.results();
    let (Some(Type::Result(result)), None) = (results.next(), results.next()) else {
        return None;
    };
    let error = match result.err() {
        None => None,
        Some(Type::String) => Some(Val::String(message.to_owned())),
        Some(Type::Variant(variant)) => {
            let preferred: &[&str] = match role {
                Some(Role::VectorStore | Role::GraphStore) => &["storage"],
                Some(Role::Embedder) => &["embedding"],
                _ => &[],
            };
            let fallback = ["internal", "unavailable", "storage", "embedding"];
            let case = preferred
                .iter()
                .chain(&fallback)
                .find_map(|name| variant.cases().find(|case| case.name == *name))?;
            let payload = match case.ty {
                None => None,
                Some(Type::String) => Some(Box::new(Val::String(message.to_owned()))),
                Some(_) => return None,
            };
            Some(Val::Variant(case.name.to_owned(), payload))
        }
        Some(_) => return None,
    };
    Some(Val::Result(Err(error.map(Box::new))))
}

/// The semantic-convention attributes every call of a role's function carries: the
/// database ones for stores (`db.system.name` is the component's name: `embedded`,
/// `qdrant`, `neo4j`), the GenAI ones for the embedder, and the OpenInference span kind
/// Phoenix classifies spans by.
fn role_attributes(role: Option<Role>, component: &str, function: &str) -> Vec<KeyValue> {
    match role {
        Some(Role::VectorStore | Role::GraphStore) => {
            let mut attributes = vec![
                KeyValue::new("db.system.name", shared(component)),
                KeyValue::new("db.operation.name", shared(function)),
            ];
            if role == Some(Role::VectorStore) && function == "search" {
                attributes.push(KeyValue::new("openinference.span.kind", "RETRIEVER"));
            }
            attributes
        }
        Some(Role::Embedder) => vec![
            KeyValue::new("gen_ai.operation.name", "embeddings"),
            KeyValue::new("openinference.span.kind", "EMBEDDING"),
        ],
        _ => Vec::new(),
    }
}

/// A string attribute value whose clones share it.
fn shared(s: &str) -> Arc<str> {
    Arc::from(s)
}

/// Attributes that depend on the arguments: the collection a vector-store call concerns,
/// a search's limit, a batch's size, the number of texts embedded. Never values.
fn call_attributes(role: Option<Role>, params: &[Val], attributes: &mut Vec<KeyValue>) {
    let collection = |value: &Val| match value {
        Val::Enum(name) => Some(KeyValue::new("db.collection.name", format!("ww_{name}"))),
        _ => None,
    };
    match (role, params) {
        (Some(Role::VectorStore), [Val::Record(fields), ..]) => {
            for (name, value) in fields {
                match (name.as_str(), value) {
                    ("collection", value) => attributes.extend(collection(value)),
                    ("limit", Val::U32(limit)) => attributes.push(KeyValue::new(
                        "db.operation.parameter.limit",
                        i64::from(*limit),
                    )),
                    _ => {}
                }
            }
        }
        (Some(Role::VectorStore), [first, rest @ ..]) => {
            attributes.extend(collection(first));
            if let Some(Val::List(items)) = rest.first() {
                attributes.push(KeyValue::new("db.operation.batch.size", items.len() as i64));
            }
        }
        (Some(Role::Embedder), [Val::List(texts)]) => {
            attributes.push(KeyValue::new("ww.embedder.texts", texts.len() as i64));
        }
        _ => {}
    }
}

/// A failed call's `error.type`: the WIT error's case (`storage`, `not-found`, ...) when
/// the callee returned one, `trap` when it trapped.
fn error_type<E>(outcome: &Result<Vec<Val>, E>) -> Option<String> {
    match outcome {
        Err(_) => Some("trap".to_owned()),
        Ok(values) => match values.as_slice() {
            [Val::Result(Err(payload))] => Some(match payload.as_deref() {
                Some(Val::Variant(case, _)) => case.clone(),
                _ => "error".to_owned(),
            }),
            _ => None,
        },
    }
}

/// The store-operation duration of one route: its attribute set's point, kept for the
/// calls that succeed, and the set, for the ones that fail.
struct StoreMetric {
    metrics: Arc<Metrics>,
    ok: Arc<Point>,
    attributes: Attributes,
}

impl StoreMetric {
    /// The span attributes a store operation's duration carries too.
    const KEYS: [&str; 4] = [
        "db.system.name",
        "db.operation.name",
        "server.address",
        "server.port",
    ];

    fn new(metrics: Arc<Metrics>, span_attributes: &[KeyValue]) -> Self {
        let pairs = span_attributes
            .iter()
            .filter(|kv| Self::KEYS.contains(&kv.key.as_str()))
            .filter_map(|kv| {
                let value = AttrValue::from_span_value(&kv.value)?;
                Some((Cow::Owned(kv.key.to_string()), value))
            })
            .collect();
        let attributes = Attributes::new(pairs);
        Self {
            ok: metrics
                .host(HostInstrument::StoreOperation)
                .point(&attributes),
            metrics,
            attributes,
        }
    }

    /// One call's duration; a failed one with its `error.type`.
    fn record(&self, seconds: f64, error_type: Option<String>, context: Option<&SpanContext>) {
        match error_type {
            None => self.ok.record(seconds, context),
            Some(kind) => {
                let attributes = self.attributes.with("error.type", kind);
                let instrument = self.metrics.host(HostInstrument::StoreOperation);
                instrument.record(seconds, &attributes, context);
            }
        }
    }
}

struct Route {
    span_name: String,
    role: Option<Role>,
    store_metric: Option<StoreMetric>,
    attributes: Vec<KeyValue>,
    interface: String,
    function: String,
    target: Arc<PluginComponent>,
}
