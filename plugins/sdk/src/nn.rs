//! A model's tensor graph run by the host, natively, through `wasi:nn` (feature `nn`).
//!
//! The host offers the graph of the component's model directory (`model.onnx`) under a
//! name, checked when it started; the component keeps everything around the forward pass
//! (tokenizing, batching, pooling). A host without an inference backend offers no graph:
//! [`Graph::load`] says so, and the component runs its model itself.
//!
//! ```no_run
//! use ww_guest::nn::{Graph, Tensor};
//!
//! let graph = Graph::load("model")?;
//! let ids = Tensor::i64(&[1, 3], &[101, 7592, 102]);
//! let mask = Tensor::i64(&[1, 3], &[1, 1, 1]);
//! let outputs = graph.compute(&[("input_ids", &ids), ("attention_mask", &mask)])?;
//! let (shape, hidden) = outputs.f32("last_hidden_state")?;
//! # Ok::<(), String>(())
//! ```

use crate::bindings::wasi_nn::wasi::nn::{graph, inference, tensor};

/// A graph the host runs, with an execution context of its own.
pub struct Graph {
    // Kept alive for the context's sake.
    _graph: graph::Graph,
    context: inference::GraphExecutionContext,
}

/// An input tensor: dimensions, element type and little-endian bytes.
pub struct Tensor {
    dimensions: Vec<u32>,
    ty: tensor::TensorType,
    data: Vec<u8>,
}

impl Tensor {
    /// A tensor of 64-bit integers (token ids, masks).
    pub fn i64(dimensions: &[u32], values: &[i64]) -> Self {
        Self {
            dimensions: dimensions.to_vec(),
            ty: tensor::TensorType::I64,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// A tensor of 32-bit floats.
    pub fn f32(dimensions: &[u32], values: &[f32]) -> Self {
        Self {
            dimensions: dimensions.to_vec(),
            ty: tensor::TensorType::Fp32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// What a `compute` returned, by output name.
pub struct Outputs(Vec<(String, tensor::Tensor)>);

impl Outputs {
    /// The float32 output `name`: its dimensions and values.
    pub fn f32(&self, name: &str) -> Result<(Vec<u32>, Vec<f32>), String> {
        let (_, tensor) = self
            .0
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("the graph has no output {name}"))?;
        if tensor.ty() != tensor::TensorType::Fp32 {
            return Err(format!("output {name} is not float32"));
        }
        let data = tensor.data();
        let values = data
            .chunks_exact(4)
            // chunks_exact(4) hands out 4-byte chunks only.
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok((tensor.dimensions(), values))
    }
}

fn message(error: &crate::bindings::wasi_nn::wasi::nn::errors::Error) -> String {
    format!("{:?}: {}", error.code(), error.data())
}

impl Graph {
    /// The graph the host offers under `name`, ready to run.
    pub fn load(name: &str) -> Result<Self, String> {
        let graph = graph::load_by_name(name).map_err(|e| message(&e))?;
        let context = graph.init_execution_context().map_err(|e| message(&e))?;
        Ok(Self {
            _graph: graph,
            context,
        })
    }

    /// Run the graph on named inputs. The host's inference span nests under this
    /// component's current span (deferred span starts are sent first).
    pub fn compute(&self, inputs: &[(&str, &Tensor)]) -> Result<Outputs, String> {
        crate::flush_span_starts();
        let inputs = inputs
            .iter()
            .map(|(name, t)| {
                (
                    (*name).to_owned(),
                    tensor::Tensor::new(&t.dimensions, t.ty, &t.data),
                )
            })
            .collect::<Vec<_>>();
        self.context
            .compute(inputs)
            .map(Outputs)
            .map_err(|e| message(&e))
    }
}
