//! Linking one component's imports to another component's exports, with a CLIENT
//! boundary span around each call (SPEC 3.2).

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use wasmtime::component::Linker;

use super::component::{ComponentState, PluginComponent};
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
        let route = Arc::new(Route {
            span_name: format!("{}.{function}", target.name()),
            attributes: vec![
                KeyValue::new("ww.component", target.name().to_owned()),
                KeyValue::new("ww.caller", caller.to_string()),
                KeyValue::new("ww.interface", interface.to_owned()),
                KeyValue::new("ww.function", function.clone()),
            ],
            interface: interface.to_owned(),
            function: function.clone(),
            target: target.clone(),
        });
        instance.func_new_async(function, move |mut store, _ty, params, results| {
            let route = route.clone();
            Box::new(async move {
                let tracing = &mut store.data_mut().tracing;
                let scope = tracing.scope_mut();
                let boundary = scope.start(
                    None,
                    Cow::Owned(route.span_name.clone()),
                    SpanKind::Client,
                    route.attributes.clone(),
                    None,
                );
                let placeholder = RequestScope::new(scope.telemetry().clone(), None, None);
                let scope = tracing.leave(placeholder);
                let (mut scope, outcome) = route
                    .target
                    .call(scope, &route.interface, &route.function, params)
                    .await;
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
                        // The callee trapped: the caller cannot get a value, so it traps too.
                        Err(wasmtime::Error::from(error))
                    }
                };
                store.data_mut().tracing.enter(scope);
                result
            })
        })?;
    }
    Ok(())
}

struct Route {
    span_name: String,
    attributes: Vec<KeyValue>,
    interface: String,
    function: String,
    target: Arc<PluginComponent>,
}
