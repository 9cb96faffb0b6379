//! Why a call into a component failed.

use std::time::Duration;

use crate::tracing_capability::Exception;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Nothing loaded exports the interface.
    #[error("no component exports {interface}")]
    NoExporter {
        /// The interface asked for.
        interface: String,
    },
    /// The component has no such function.
    #[error("component {component} has no function {interface}#{function}")]
    NoSuchFunction {
        /// The component.
        component: String,
        /// Its interface.
        interface: String,
        /// The function asked for.
        function: String,
    },
    /// A fresh instance could not be created.
    #[error("component {component} could not be instantiated: {message}")]
    Instantiate {
        /// The component.
        component: String,
        /// Why.
        message: String,
    },
    /// The component trapped (panic, deadline, memory, or a trap further down); it has
    /// been discarded and the next call gets a fresh instance.
    #[error("component {component} failed in {function}: {reason}")]
    Trap {
        /// The component.
        component: String,
        /// The function that was running.
        function: String,
        /// What happened.
        reason: TrapReason,
        /// The wasm backtrace, when there is one.
        backtrace: Option<String>,
    },
}

/// The kind of trap, for errors and span attributes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrapReason {
    /// The call ran past its deadline.
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    /// The component tried to grow memory past its limit.
    #[error("memory limit of {0} bytes exceeded")]
    Memory(usize),
    /// A component this one called through the host failed.
    #[error("its call to {} failed ({})", .0.component(), .0.reason())]
    Callee(Box<CallError>),
    /// A panic or other trap.
    #[error("{0}")]
    Trap(String),
}

impl CallError {
    /// The component the error is about.
    pub fn component(&self) -> &str {
        match self {
            CallError::NoExporter { .. } => "host",
            CallError::NoSuchFunction { component, .. }
            | CallError::Instantiate { component, .. }
            | CallError::Trap { component, .. } => component,
        }
    }

    /// Why, without the component's name.
    pub fn reason(&self) -> String {
        match self {
            CallError::Trap { reason, .. } => reason.to_string(),
            CallError::Instantiate { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The exception recorded on spans for this error.
    pub fn exception(&self) -> Exception {
        let kind = match self {
            CallError::Trap { .. } => "wasm_trap",
            CallError::NoExporter { .. } | CallError::NoSuchFunction { .. } => "routing_error",
            CallError::Instantiate { .. } => "instantiation_error",
        };
        let stacktrace = match self {
            CallError::Trap { backtrace, .. } => backtrace.clone(),
            _ => None,
        };
        Exception {
            kind: kind.to_owned(),
            message: self.to_string(),
            stacktrace,
        }
    }
}
