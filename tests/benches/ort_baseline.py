"""ONNX Runtime's own Python API on the model embedder's graph: the baseline of
`make bench-embed` (tests/benches/embed.rs), run in the same run on the same CPU.

The same work as the component does around the graph, in the way that is fastest for
ONNX Runtime: Hugging Face's tokenizer (Rust, the same tokenizer.json), sorted texts in
passes of at most 512 positions (the component's own rule, the fastest measured), mean
pooling and normalisation in numpy. Input: a JSON object on stdin
({"model_dir", "threads", "singles": [...], "batches": [[...], ...], "repeat"}); output: a
JSON object of sorted latencies in seconds ("single", "batch").
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

POSITIONS_PER_PASS = 512


def main() -> None:
    job = json.load(sys.stdin)
    model_dir = job["model_dir"]
    config = json.load(open(f"{model_dir}/config.json"))
    limit = json.load(open(f"{model_dir}/sentence_bert_config.json")).get("max_seq_length", 256)
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(limit)
    pad = next((tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>") if tokenizer.token_to_id(t) is not None), config.get("pad_token_id", 0))
    options = ort.SessionOptions()
    options.intra_op_num_threads = job["threads"]
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(f"{model_dir}/model.onnx", options, providers=["CPUExecutionProvider"])

    def embed(texts):
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = [None] * len(ids)
        start = 0
        while start < len(order):
            longest = len(ids[order[start]])
            members = order[start:start + max(1, POSITIONS_PER_PASS // longest)]
            batch = np.array([ids[i] + [pad] * (longest - len(ids[i])) for i in members], dtype=np.int64)
            mask = np.array([[1] * len(ids[i]) + [0] * (longest - len(ids[i])) for i in members], dtype=np.int64)
            hidden = session.run(None, {"input_ids": batch, "attention_mask": mask})[0]
            pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            for i, v in zip(members, pooled):
                out[i] = v
            start += len(members)
        return out

    def timed(texts):
        begin = time.perf_counter()
        embed(texts)
        return time.perf_counter() - begin

    embed(["warm up"])
    single = sorted(timed([job["singles"][i % len(job["singles"])]]) for i in range(job["repeat"]))
    batch = sorted(timed(b) for b in job["batches"])
    json.dump({"single": single, "batch": batch, "version": ort.__version__}, sys.stdout)


if __name__ == "__main__":
    main()
