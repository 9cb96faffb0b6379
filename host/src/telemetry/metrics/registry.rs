//! The registry: the host's instruments, the guests' (created on first use, bounded per
//! component), and the observers of counts kept elsewhere.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use super::aggregate::{Attributes, DURATION_BUCKETS, Instrument, Kind};

/// A cumulative count read from elsewhere at collection time.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Instrument name.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Description.
    pub description: &'static str,
    /// Attribute set.
    pub attributes: Attributes,
    /// The count so far.
    pub value: u64,
}

/// Something that reports counts kept elsewhere (the components' instantiations, ...).
pub type Observer = Box<dyn Fn(&mut Vec<Observation>) + Send + Sync>;

/// One of the host's own instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostInstrument {
    /// `mcp.server.operation.duration` (s): one per tool call.
    ToolCall,
    /// `db.client.operation.duration` (s): one per store operation.
    StoreOperation,
    /// `ww.component.call.duration` (s): one per call into a component.
    ComponentCall,
}

/// The host's instruments.
#[derive(Debug)]
pub(super) struct HostInstruments {
    pub(super) tool_duration: Instrument,
    pub(super) store_duration: Instrument,
    pub(super) component_duration: Instrument,
}

impl HostInstruments {
    /// Every one of them.
    pub(super) fn all(&self) -> [&Instrument; 3] {
        [
            &self.tool_duration,
            &self.store_duration,
            &self.component_duration,
        ]
    }
}

/// Why a guest measurement was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestMetricError {
    /// Not an OpenTelemetry instrument name.
    #[error("{0:?} is not an instrument name (a letter, then up to 254 of A-Z a-z 0-9 _ . - /)")]
    Name(String),
    /// The unit is too long or not ASCII.
    #[error("unit {0:?} is not at most 63 ASCII characters")]
    Unit(String),
    /// The component already uses the name for the other kind.
    #[error("{name} is a {existing}, not a {asked}")]
    KindMismatch {
        /// The instrument.
        name: String,
        /// What it is.
        existing: Kind,
        /// What was asked.
        asked: Kind,
    },
    /// The component has as many instruments as it may.
    #[error("a component may have at most {0} instruments")]
    TooMany(usize),
}

/// Instruments one component may create.
pub const MAX_GUEST_INSTRUMENTS: usize = 64;

/// Whether `name` follows the OpenTelemetry instrument name syntax.
pub fn is_instrument_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
}

/// One component's instruments.
pub(super) type GuestScope = (Arc<str>, Vec<Arc<Instrument>>);

/// Every instrument, and the way they are read.
pub struct Metrics {
    pub(super) start: SystemTime,
    pub(super) host: HostInstruments,
    /// Guests' instruments, by component (the instrumentation scope).
    pub(super) guests: RwLock<Vec<GuestScope>>,
    pub(super) observers: Mutex<Vec<Observer>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The host's instruments, no guest ones yet.
    pub fn new() -> Self {
        let duration = |name: &'static str, description: &'static str| {
            Instrument::new(name, "s", description, Kind::Histogram(DURATION_BUCKETS))
        };
        Self {
            start: SystemTime::now(),
            host: HostInstruments {
                tool_duration: duration(
                    "mcp.server.operation.duration",
                    "Duration of MCP tool calls, as the server saw them",
                ),
                store_duration: duration(
                    "db.client.operation.duration",
                    "Duration of store operations, from the calling component's side",
                ),
                component_duration: duration(
                    "ww.component.call.duration",
                    "Duration of calls into a WebAssembly component",
                ),
            },
            guests: RwLock::new(Vec::new()),
            observers: Mutex::new(Vec::new()),
        }
    }

    /// The host's instrument `which`.
    pub fn host(&self, which: HostInstrument) -> &Instrument {
        match which {
            HostInstrument::ToolCall => &self.host.tool_duration,
            HostInstrument::StoreOperation => &self.host.store_duration,
            HostInstrument::ComponentCall => &self.host.component_duration,
        }
    }

    /// Whether nothing was measured yet (no export is worth sending).
    pub fn is_empty(&self) -> bool {
        self.host.all().iter().all(|i| i.is_empty())
            && self
                .guests
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .all(|(_, instruments)| instruments.iter().all(|i| i.is_empty()))
    }

    /// Report counts kept elsewhere at each collection.
    pub fn observe(&self, observer: Observer) {
        self.observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    /// A guest's instrument `name` in `component`'s scope, created on first use.
    pub fn guest_instrument(
        &self,
        component: &Arc<str>,
        name: &str,
        unit: &str,
        kind: Kind,
    ) -> Result<Arc<Instrument>, GuestMetricError> {
        let find = |guests: &[GuestScope]| {
            guests
                .iter()
                .find(|(scope, _)| scope == component)
                .and_then(|(_, instruments)| instruments.iter().find(|i| i.name == name))
                .cloned()
        };
        let check = |found: Arc<Instrument>| {
            if found.kind == kind {
                Ok(found)
            } else {
                Err(GuestMetricError::KindMismatch {
                    name: name.to_owned(),
                    existing: found.kind,
                    asked: kind,
                })
            }
        };
        if let Some(found) = find(&self.guests.read().unwrap_or_else(|e| e.into_inner())) {
            return check(found);
        }
        if !is_instrument_name(name) {
            return Err(GuestMetricError::Name(name.chars().take(64).collect()));
        }
        if unit.len() > 63 || !unit.is_ascii() {
            return Err(GuestMetricError::Unit(unit.chars().take(64).collect()));
        }
        let mut guests = self.guests.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = find(&guests) {
            return check(found);
        }
        let index = match guests.iter().position(|(scope, _)| scope == component) {
            Some(index) => index,
            None => {
                guests.push((component.clone(), Vec::new()));
                guests.len() - 1
            }
        };
        #[allow(clippy::indexing_slicing)] // found by `position` or pushed just above
        let instruments = &mut guests[index].1;
        if instruments.len() >= MAX_GUEST_INSTRUMENTS {
            return Err(GuestMetricError::TooMany(MAX_GUEST_INSTRUMENTS));
        }
        let instrument = Arc::new(Instrument::new(
            name.to_owned(),
            unit.to_owned(),
            format!("Recorded by component {component}"),
            kind,
        ));
        instruments.push(instrument.clone());
        Ok(instrument)
    }
}
