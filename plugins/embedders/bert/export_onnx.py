"""Write a sentence-transformers model directory's encoder as an ONNX graph (model.onnx).

The model embedder hands the forward pass to the host through wasi:nn, whose ONNX Runtime
backend runs ONNX graphs. No PyPI package carries these models as ONNX files that we could
check, and the usual exporter (torch.onnx) needs torch, gigabytes we do not otherwise need.
The encoders are small and regular, so this script builds the graph directly from the
weights in model.safetensors with the `onnx` package's helpers: the same arithmetic as the
reference implementations (Hugging Face transformers' BertModel and MPNetModel), written
out op by op. docs/recall.md says how its vectors were checked against the in-component
model (candle) and what recall they give.

Graph: inputs `input_ids` and `attention_mask` (int64, [batch, sequence]); output
`last_hidden_state` (float32, [batch, sequence, hidden]). Pooling and normalisation stay in
the component. Supported: BERT-family models (`model_type` bert: all-MiniLM-L6-v2, BGE)
and MPNet (`model_type` mpnet: all-mpnet-base-v2, with its relative position buckets).

Usage: python export_onnx.py MODEL_DIR   (writes MODEL_DIR/model.onnx, atomically)
"""

import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17  # LayerNormalization is an op from 17 on; ONNX Runtime 1.22 runs up to 22.


class Graph:
    """Nodes and initializers, named in order."""

    def __init__(self):
        self.nodes = []
        self.initializers = []
        self.count = 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint, array):
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind, inputs, hint=None, **attrs):
        out = self.name(hint or kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out


def gelu(g, x):
    # The exact GELU of both models (hidden_act "gelu"): 0.5 x (1 + erf(x / sqrt 2)).
    scaled = g.op("Div", [x, g.const("sqrt2", np.float32(math.sqrt(2.0)))])
    one_plus = g.op("Add", [g.op("Erf", [scaled]), g.const("one", np.float32(1.0))])
    return g.op("Mul", [g.op("Mul", [x, one_plus]), g.const("half", np.float32(0.5))])


def linear(g, x, weights, prefix):
    # torch's Linear keeps [out, in]; MatMul wants [in, out].
    w = g.const(prefix + ".weight", weights[prefix + ".weight"].T.copy())
    b = g.const(prefix + ".bias", weights[prefix + ".bias"])
    return g.op("Add", [g.op("MatMul", [x, w]), b])


def layer_norm(g, x, weights, prefix, eps):
    return g.op(
        "LayerNormalization",
        [x, g.const(prefix + ".weight", weights[prefix + ".weight"]),
         g.const(prefix + ".bias", weights[prefix + ".bias"])],
        axis=-1,
        epsilon=float(eps),
    )


def relative_buckets(length, num_buckets=32, max_distance=128):
    """MPNet's bucket of every (query, key) pair: transformers' relative_position_bucket
    (bidirectional), in float32 as torch computes it."""
    context = np.arange(length)[:, None]
    memory = np.arange(length)[None, :]
    n = -(memory - context)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    # n < max_exact takes n itself below; max(n, 1) only keeps log(0) out of the rest.
    large = max_exact + (
        np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(half - max_exact)
    ).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(n < max_exact, n, large)


def build(model_dir):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    kind = config.get("model_type", "bert")
    if kind not in ("bert", "mpnet"):
        raise SystemExit(f"{model_dir}: model_type {kind!r} is not supported (bert, mpnet)")
    # Some checkpoints prefix every tensor with the model's name.
    for prefix in ("bert.", "mpnet."):
        if any(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = config.get("layer_norm_eps", 1e-12)

    g = Graph()
    ids, mask = "input_ids", "attention_mask"
    shape = g.op("Shape", [ids])
    seq = g.op("Slice", [shape, g.const("i1", np.array([1])), g.const("i2", np.array([2]))])

    # Embeddings.
    x = g.op("Gather", [g.const("word_embeddings", weights["embeddings.word_embeddings.weight"]), ids])
    positions = g.const("position_embeddings", weights["embeddings.position_embeddings.weight"])
    if kind == "bert":
        # Absolute positions 0..seq, and token type 0 throughout.
        pos = g.op("Slice", [positions, g.const("zero", np.array([0])), seq, g.const("axis0", np.array([0]))])
        x = g.op("Add", [x, pos])
        token_type = weights["embeddings.token_type_embeddings.weight"][0]
        x = g.op("Add", [x, g.const("token_type0", token_type)])
    else:
        # MPNet counts positions from padding_idx + 1 over the real tokens; padding gets
        # padding_idx (transformers' create_position_ids_from_input_ids).
        pad = config.get("pad_token_id", 1)
        counted = g.op("Mul", [g.op("CumSum", [mask, g.const("axis1", np.array(1))]), mask])
        pos_ids = g.op("Add", [counted, g.const("pad", np.int64(pad))])
        x = g.op("Add", [x, g.op("Gather", [positions, pos_ids])])
    x = layer_norm(g, x, weights, "embeddings.LayerNorm", eps)

    # The additive mask, [batch, 1, 1, seq]: 0 where attended, float32's lowest where not.
    keep = g.op("Cast", [mask], to=TensorProto.FLOAT)
    blocked = g.op("Sub", [g.const("one", np.float32(1.0)), keep])
    additive = g.op("Mul", [blocked, g.const("lowest", np.float32(np.finfo(np.float32).min))])
    additive = g.op("Unsqueeze", [additive, g.const("axes12", np.array([1, 2]))])
    if kind == "mpnet":
        # One bias per head for each (query, key) bucket: [1, heads, seq, seq].
        limit = config["max_position_embeddings"]
        buckets = g.const("buckets", relative_buckets(limit, config.get("relative_attention_num_buckets", 32)))
        zeros = g.const("zeros2", np.array([0, 0]))
        ends = g.op("Concat", [seq, seq], axis=0)
        buckets = g.op("Slice", [buckets, zeros, ends, g.const("axes01", np.array([0, 1]))])
        table = g.const("relative_attention_bias", weights["encoder.relative_attention_bias.weight"])
        bias = g.op("Transpose", [g.op("Gather", [table, buckets])], perm=[2, 0, 1])
        additive = g.op("Add", [additive, g.op("Unsqueeze", [bias, g.const("axis0", np.array([0]))])])

    split = g.const("heads_shape", np.array([0, 0, heads, head_dim]))
    merge = g.const("hidden_shape", np.array([0, 0, hidden]))
    scale = g.const("scale", np.float32(1.0 / math.sqrt(head_dim)))

    def heads_of(t):
        return g.op("Transpose", [g.op("Reshape", [t, split])], perm=[0, 2, 1, 3])

    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        if kind == "bert":
            q, k, v, o = (p + "attention.self.query", p + "attention.self.key",
                          p + "attention.self.value", p + "attention.output.dense")
            attention_norm = p + "attention.output.LayerNorm"
        else:
            q, k, v, o = (p + "attention.attn.q", p + "attention.attn.k",
                          p + "attention.attn.v", p + "attention.attn.o")
            attention_norm = p + "attention.LayerNorm"
        query = heads_of(linear(g, x, weights, q))
        key = g.op("Transpose", [g.op("Reshape", [linear(g, x, weights, k), split])], perm=[0, 2, 3, 1])
        value = heads_of(linear(g, x, weights, v))
        scores = g.op("Mul", [g.op("MatMul", [query, key]), scale])
        probs = g.op("Softmax", [g.op("Add", [scores, additive])], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, value])], perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge])
        x = layer_norm(g, g.op("Add", [linear(g, context, weights, o), x]), weights, attention_norm, eps)
        inner = gelu(g, linear(g, x, weights, p + "intermediate.dense"))
        out = linear(g, inner, weights, p + "output.dense")
        x = layer_norm(g, g.op("Add", [out, x]), weights, p + "output.LayerNorm", eps)

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        g.nodes,
        f"{kind}-encoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="world-weaver export_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    model_dir = sys.argv[1]
    model = build(model_dir)
    target = os.path.join(model_dir, "model.onnx")
    onnx.save(model, target + ".partial")
    os.replace(target + ".partial", target)


if __name__ == "__main__":
    main()
