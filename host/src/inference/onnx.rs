//! The ONNX Runtime backend of `wasi:nn`: the library, a model's graph as a set of
//! sessions, and `compute` as one traced run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::tensor::TensorElementType;
use ort::value::{DynValue, Tensor as OrtTensor, ValueRef, ValueType};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, TensorType};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::{GraphError, ParentSlot};
use crate::telemetry::Telemetry;

/// Elements one `compute` input may hold: a model embedder's largest call is a few
/// thousand token ids; this bounds what a guest can make the host allocate and convert.
const MAX_INPUT_ELEMENTS: usize = 16 << 20;

/// ONNX Runtime, loaded from its shared library.
#[derive(Debug, Clone)]
pub struct OnnxRuntime {
    library: PathBuf,
    telemetry: Arc<Telemetry>,
}

impl OnnxRuntime {
    /// Load the library at `library` (once per process: ONNX Runtime keeps one global
    /// environment). `Err` says why it cannot serve, for the start line.
    pub fn load(library: &Path, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        if !library.is_file() {
            return Err(format!(
                "no ONNX Runtime library at {} (`make onnxruntime` fetches it)",
                library.display()
            ));
        }
        let path = library.to_string_lossy().into_owned();
        // `ort` panics when the file is not a usable ONNX Runtime (not a library, a
        // version older than its API): caught here, it means "not available".
        let committed = std::panic::catch_unwind(|| {
            ort::init_from(path)
                .with_name("world-weaver")
                .with_telemetry(false)
                .commit()
        });
        match committed {
            Ok(Ok(_)) => Ok(Self {
                library: library.to_owned(),
                telemetry,
            }),
            Ok(Err(e)) => Err(format!("ONNX Runtime at {} failed: {e}", library.display())),
            Err(panic) => Err(format!(
                "{} is not a usable ONNX Runtime: {}",
                library.display(),
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("it could not be loaded")
            )),
        }
    }

    /// The library this runtime was loaded from.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Load `file` as `sessions` sessions of `threads` intra-op threads each.
    pub fn load_graph(
        &self,
        file: &Path,
        model: &str,
        sessions: usize,
        threads: usize,
    ) -> Result<ModelGraph, GraphError> {
        let error = |e: ort::Error| GraphError {
            file: file.to_owned(),
            reason: e.to_string(),
        };
        let open = || -> Result<Session, GraphError> {
            Session::builder()
                .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
                .and_then(|b| b.with_intra_threads(threads))
                .and_then(|b| b.with_inter_threads(1))
                .and_then(|b| b.commit_from_file(file))
                .map_err(error)
        };
        let sessions = (0..sessions.max(1))
            .map(|_| open().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ModelGraph {
            sessions,
            threads,
            model: model.to_owned(),
            file: file.to_owned(),
            used: AtomicBool::new(false),
            telemetry: self.telemetry.clone(),
        })
    }
}

/// One model's graph: a session per instance of the component that runs it.
pub struct ModelGraph {
    sessions: Vec<Mutex<Session>>,
    threads: usize,
    model: String,
    file: PathBuf,
    used: AtomicBool,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for ModelGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelGraph")
            .field("file", &self.file)
            .field("sessions", &self.sessions.len())
            .field("threads", &self.threads)
            .finish()
    }
}

impl ModelGraph {
    /// Whether a component has run this graph (it found the graph and chose it over
    /// running the model itself).
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// A session no other call holds, or (all busy: more callers than sessions) the
    /// first to come free.
    fn session(&self) -> Result<MutexGuard<'_, Session>, BackendError> {
        for session in &self.sessions {
            if let Ok(guard) = session.try_lock() {
                return Ok(guard);
            }
        }
        self.sessions
            .first()
            .ok_or_else(|| access("the graph has no session"))?
            .lock()
            .map_err(|_| access("a session was poisoned by a panic"))
    }
}

fn access(message: impl std::fmt::Display) -> BackendError {
    BackendError::BackendAccess(wasmtime::format_err!("{message}"))
}

/// Refuses `wasi:nn/graph.load` of raw bytes: a component loads only the graphs its
/// model directory holds, by name, checked at start.
pub struct RefuseBytes;

impl BackendInner for RefuseBytes {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn load(&mut self, _: &[&[u8]], _: ExecutionTarget) -> Result<Graph, BackendError> {
        Err(access(
            "graphs are loaded by name from the component's model directory (load-by-name \"model\"), not from bytes",
        ))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}

/// A store's handle on a shared graph: its spans go under that store's request.
pub(super) struct StoreGraph {
    graph: Arc<ModelGraph>,
    parent: Arc<ParentSlot>,
}

impl StoreGraph {
    pub(super) fn new(graph: Arc<ModelGraph>, parent: Arc<ParentSlot>) -> Self {
        Self { graph, parent }
    }
}

impl BackendGraph for StoreGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        self.graph.used.store(true, Ordering::Relaxed);
        Ok(ExecutionContext::from(Box::new(RunContext {
            graph: self.graph.clone(),
            parent: self.parent.clone(),
        })
            as Box<dyn BackendExecutionContext>))
    }
}

/// An execution context: `compute` with named inputs (the WIT API). The WITX calls
/// (`set-input`, `get-output`) are refused: no component here uses them.
struct RunContext {
    graph: Arc<ModelGraph>,
    parent: Arc<ParentSlot>,
}

impl BackendExecutionContext for RunContext {
    fn set_input(&mut self, _: Id, _: &Tensor) -> Result<(), BackendError> {
        Err(access("set-input is not supported: pass inputs to compute"))
    }

    fn get_output(&mut self, _: Id) -> Result<Tensor, BackendError> {
        Err(access(
            "get-output is not supported: compute returns the outputs",
        ))
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let inputs = inputs
            .ok_or_else(|| access("compute without inputs (the WITX API) is not supported"))?;
        let telemetry = &self.graph.telemetry;
        let mut span = telemetry.is_recording().then(|| {
            let parent = match self.parent.get() {
                Some(parent) => Context::new().with_remote_span_context(parent),
                None => Context::new(),
            };
            let mut attributes = vec![
                KeyValue::new("ww.inference.backend", "onnx"),
                KeyValue::new("ww.inference.threads", self.graph.threads as i64),
                KeyValue::new("ww.inference.sessions", self.graph.sessions.len() as i64),
                KeyValue::new("gen_ai.request.model", self.graph.model.clone()),
            ];
            for input in &inputs {
                let shape: Vec<i64> = input
                    .tensor
                    .dimensions
                    .iter()
                    .map(|&d| i64::from(d))
                    .collect();
                attributes.push(KeyValue::new(
                    format!("ww.inference.input.{}.shape", input.name),
                    opentelemetry::Value::Array(shape.into()),
                ));
            }
            telemetry.tracer().build_with_context(
                opentelemetry::trace::SpanBuilder::from_name("onnx.run")
                    .with_kind(SpanKind::Internal)
                    .with_attributes(attributes),
                &parent,
            )
        });
        let result = self.run(inputs);
        if let Some(span) = span.as_mut() {
            if let Err(error) = &result {
                let message = format!("{error:#}");
                span.set_attribute(KeyValue::new("error.type", "inference"));
                span.add_event(
                    "exception",
                    vec![
                        KeyValue::new("exception.type", "inference"),
                        KeyValue::new("exception.message", message.clone()),
                    ],
                );
                span.set_status(Status::error(message));
            }
            span.end();
        }
        result.map(Some)
    }
}

impl RunContext {
    fn run(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, BackendError> {
        let values = inputs
            .into_iter()
            .map(|input| Ok((input.name, to_value(&input.tensor)?)))
            .collect::<Result<Vec<(String, SessionInputValue<'static>)>, BackendError>>()?;
        let mut session = self.graph.session()?;
        let outputs = session
            .run(values)
            .map_err(|e| access(format!("ONNX Runtime: {e}")))?;
        outputs
            .iter()
            .map(|(name, value)| {
                Ok(NamedTensor {
                    name: name.to_owned(),
                    tensor: from_value(name, &value)?,
                })
            })
            .collect()
    }
}

/// A guest's tensor as an ONNX Runtime value (the bytes are little-endian elements).
fn to_value(tensor: &Tensor) -> Result<SessionInputValue<'static>, BackendError> {
    let shape: Vec<i64> = tensor.dimensions.iter().map(|&d| i64::from(d)).collect();
    let elements = tensor
        .dimensions
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
        .filter(|&n| n <= MAX_INPUT_ELEMENTS)
        .ok_or_else(|| {
            access(format!(
                "an input of more than {MAX_INPUT_ELEMENTS} elements"
            ))
        })?;
    /// The elements of `data` (`count` of `N` little-endian bytes each) as a tensor.
    fn decoded<const N: usize, T>(
        shape: Vec<i64>,
        data: &[u8],
        count: usize,
        decode: fn([u8; N]) -> T,
    ) -> Result<DynValue, BackendError>
    where
        T: ort::tensor::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
    {
        if data.len() != count * N {
            return Err(access(format!(
                "the tensor's data is {} bytes; its dimensions need {}",
                data.len(),
                count * N
            )));
        }
        let values: Vec<T> = data
            .chunks_exact(N)
            .map(|chunk| {
                let mut bytes = [0u8; N];
                bytes.copy_from_slice(chunk);
                decode(bytes)
            })
            .collect();
        OrtTensor::from_array((shape, values))
            .map(|t| t.into_dyn())
            .map_err(|e| access(format!("ONNX Runtime: {e}")))
    }
    let data = &tensor.data;
    let value: DynValue = match tensor.ty {
        TensorType::I64 => decoded(shape, data, elements, i64::from_le_bytes)?,
        TensorType::I32 => decoded(shape, data, elements, i32::from_le_bytes)?,
        TensorType::Fp32 => decoded(shape, data, elements, f32::from_le_bytes)?,
        TensorType::Fp64 => decoded(shape, data, elements, f64::from_le_bytes)?,
        TensorType::U8 => decoded(shape, data, elements, u8::from_le_bytes)?,
        other => {
            return Err(BackendError::UnsupportedTensorType(format!("{other:?}")));
        }
    };
    Ok(value.into())
}

/// An output value as a `wasi:nn` tensor (float32 and int64 outputs).
fn from_value(name: &str, value: &ValueRef<'_>) -> Result<Tensor, BackendError> {
    /// The tensor of `T`s in `value`, as little-endian bytes of type `ty`.
    fn extract<T, const N: usize>(
        name: &str,
        value: &ValueRef<'_>,
        ty: TensorType,
        bytes: fn(&T) -> [u8; N],
    ) -> Result<Tensor, BackendError>
    where
        T: ort::tensor::PrimitiveTensorElementType,
    {
        let (shape, data) = value
            .try_extract_tensor::<T>()
            .map_err(|e| access(format!("output {name}: {e}")))?;
        let dimensions = shape
            .iter()
            .map(|&d| {
                u32::try_from(d).map_err(|_| access(format!("output {name} has dimension {d}")))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(Tensor::new(
            dimensions,
            ty,
            data.iter().flat_map(bytes).collect(),
        ))
    }
    match value.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            ..
        } => extract(name, value, TensorType::Fp32, |x: &f32| x.to_le_bytes()),
        ValueType::Tensor {
            ty: TensorElementType::Int64,
            ..
        } => extract(name, value, TensorType::I64, |x: &i64| x.to_le_bytes()),
        other => Err(BackendError::UnsupportedTensorType(format!(
            "output {name} is {other:?}"
        ))),
    }
}
