//! Upkeep: work a component asks for during a call (the embedded store's compaction)
//! and the host runs after it, outside every request.
//!
//! The component calls the WIT `upkeep.request(task)`; the task goes to the component's
//! upkeep thread, which runs it through the component's own `maintenance.run` export.
//! That export is long-running, so each run gets an instance of its own under the long
//! deadline: the instance serving requests goes on serving. The thread is an OS thread
//! of its own at a lower scheduling priority (nice 10), with a single-threaded runtime:
//! a compaction computing for seconds takes neither a request worker nor, when the cores
//! are contended, their share of the CPU. Each run is a trace of its own
//! (`<component>.upkeep`), linked to the span that asked for it.
//!
//! Requests are coalesced: a task asked again while it waits or runs is one task; after a
//! success, what was asked for it meanwhile is dropped (it was asked before the work was
//! done); after a failure it runs again only when asked again, and not before a back-off
//! (1 s, doubling to 1 min), so a full disk is retried, not hammered.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Weak;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasData, Linker, Val};

use super::PluginComponent;
use crate::bindings::ww::memory::upkeep as wit;
use crate::tracing_capability::{Outcome, RequestScope};

/// The interface a component exports to have its upkeep run.
pub const MAINTENANCE: &str = "ww:memory/maintenance@0.1.0";
/// Its one function.
pub const RUN: &str = "run";
/// The first back-off after a failed run; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The upkeep thread's nice value: below requests when the cores are contended.
const NICE: i32 = 10;

/// One task asked for, and the span that asked (linked from the run's trace).
#[derive(Debug)]
pub struct UpkeepRequest {
    task: String,
    asked_by: Option<SpanContext>,
}

/// Where a component's instances send their requests.
pub type UpkeepSender = mpsc::UnboundedSender<UpkeepRequest>;

/// The `upkeep` capability's view of a store: the component's sender (none when the
/// component has no upkeep thread) and the span of the call being served.
pub struct WwUpkeep<'a> {
    sender: Option<&'a UpkeepSender>,
    asked_by: Option<SpanContext>,
}

impl<'a> WwUpkeep<'a> {
    /// The view of an instance's sender, asked from within the span `asked_by`.
    pub fn new(sender: Option<&'a UpkeepSender>, asked_by: Option<SpanContext>) -> Self {
        Self { sender, asked_by }
    }
}

struct HasUpkeep;

impl HasData for HasUpkeep {
    type Data<'a> = WwUpkeep<'a>;
}

impl wit::Host for WwUpkeep<'_> {
    fn request(&mut self, task: String) -> bool {
        // The thread is gone only when the component is being dropped: the component
        // then does the work itself, as with a host that runs no upkeep.
        self.sender.is_some_and(|sender| {
            sender
                .send(UpkeepRequest {
                    task,
                    asked_by: self.asked_by.take(),
                })
                .is_ok()
        })
    }
}

/// Link the `upkeep` interface; `get` gives an instance's view.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WwUpkeep<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasUpkeep>(linker, get)
}

/// Start `component`'s upkeep thread: the sender its instances ask through, and the
/// thread. It ends when `halt` is cancelled or every sender is gone.
pub(super) fn start(
    component: Weak<PluginComponent>,
    name: &str,
    halt: CancellationToken,
) -> std::io::Result<(UpkeepSender, std::thread::JoinHandle<()>)> {
    let (sender, requests) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name(format!("ww-upkeep-{name}"))
        .spawn(move || {
            // Best effort: an unprivileged process may always lower its own priority.
            let _ = rustix::process::setpriority_process(None, NICE);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!("no runtime for the upkeep thread: {e}");
                    return;
                }
            };
            runtime.block_on(async {
                tokio::select! {
                    () = serve(component, requests) => {}
                    () = halt.cancelled() => {}
                }
            });
        })?;
    Ok((sender, thread))
}

/// A task's failures in a row, and when it may run again.
struct Failed {
    in_a_row: u32,
    not_before: Instant,
}

async fn serve(
    component: Weak<PluginComponent>,
    mut requests: mpsc::UnboundedReceiver<UpkeepRequest>,
) {
    let mut queue: VecDeque<UpkeepRequest> = VecDeque::new();
    let mut failed: HashMap<String, Failed> = HashMap::new();
    loop {
        if queue.is_empty() {
            match requests.recv().await {
                Some(request) => queue.push_back(request),
                None => return,
            }
        }
        while let Ok(request) = requests.try_recv() {
            if !queue.iter().any(|q| q.task == request.task) {
                queue.push_back(request);
            }
        }
        let Some(request) = queue.pop_front() else {
            continue;
        };
        if failed
            .get(&request.task)
            .is_some_and(|f| Instant::now() < f.not_before)
        {
            continue;
        }
        let Some(target) = component.upgrade() else {
            return;
        };
        let succeeded = run(&target, &request).await;
        drop(target);
        if succeeded {
            failed.remove(&request.task);
            // Asked while it ran: before the work was done.
            while let Ok(other) = requests.try_recv() {
                if other.task != request.task && !queue.iter().any(|q| q.task == other.task) {
                    queue.push_back(other);
                }
            }
            queue.retain(|q| q.task != request.task);
        } else {
            let entry = failed.entry(request.task).or_insert(Failed {
                in_a_row: 0,
                not_before: Instant::now(),
            });
            entry.in_a_row += 1;
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (entry.in_a_row - 1).min(6))
                .min(MAX_BACKOFF);
            entry.not_before = Instant::now() + backoff;
        }
    }
}

/// Run one task in a trace of its own: whether it succeeded.
async fn run(component: &PluginComponent, request: &UpkeepRequest) -> bool {
    let mut scope = RequestScope::new(component.telemetry().clone(), None, None);
    let root = scope.start(
        None,
        Cow::Owned(format!("{}.upkeep", component.name())),
        SpanKind::Internal,
        vec![
            KeyValue::new("ww.component", component.name().to_owned()),
            KeyValue::new("ww.upkeep.task", request.task.clone()),
        ],
        None,
    );
    if let Some(asked_by) = &request.asked_by {
        scope.add_link(&None, root, asked_by.clone(), vec![]);
    }
    let (mut scope, result) = component
        .call(
            scope,
            MAINTENANCE,
            RUN,
            &[Val::String(request.task.clone())],
        )
        .await;
    let (outcome, attributes, succeeded) = match result.as_deref() {
        Ok([Val::Result(Ok(done))]) => {
            let done = match done.as_deref() {
                Some(Val::String(done)) => done.clone(),
                _ => String::new(),
            };
            (
                Outcome::Unset,
                vec![KeyValue::new("ww.upkeep.done", done)],
                true,
            )
        }
        Ok([Val::Result(Err(why))]) => {
            let why = match why.as_deref() {
                Some(Val::String(why)) => why.clone(),
                _ => "no reason given".to_owned(),
            };
            tracing::warn!(
                "{}: upkeep task {:?} failed, to be retried when asked again: {why}",
                component.name(),
                request.task
            );
            (Outcome::Error(why), vec![], false)
        }
        Ok(other) => {
            let why = format!("{MAINTENANCE}#{RUN} returned {other:?}");
            (Outcome::Error(why), vec![], false)
        }
        Err(e) => {
            tracing::warn!("{}: upkeep task {:?}: {e}", component.name(), request.task);
            (Outcome::Error(e.to_string()), vec![], false)
        }
    };
    scope.end(&None, root, outcome, attributes, vec![], None);
    scope.finish();
    succeeded
}
