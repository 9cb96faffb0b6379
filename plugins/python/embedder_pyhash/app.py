"""A feature-hashing embedder in pure Python: a plugin of the embedder role built with
componentize-py and traced with World Weaver's Python SDK.

Why hashing and not TF-IDF: a vector store keeps the vectors it was given, so an embedder
must give the same text the same vector for ever. TF-IDF weights change with the corpus
it has seen (and a component may be re-instantiated at any time, losing it); hashing
needs no state and no model: words, word pairs and character trigrams are hashed into
384 signed buckets, so texts that share words, spellings or phrases point the same way.
"""

import hashlib
import math
import re
from typing import List

from wit_world import exports

from ww_guest import SpanKind, add_span_attribute, counter_add, trace_span, traced

DIMENSION = 384
MODEL = "py-hash-v1"

# Weights of the three kinds of feature: a shared word counts most, a shared pair of
# words (phrase) next, a shared trigram (spelling, stems, compounds) least: there are
# many of them per word.
WORD, PAIR, TRIGRAM = 1.0, 0.7, 0.3

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _bucket(feature: str):
    """A stable bucket and sign (Python's own `hash` changes per process)."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return digest % DIMENSION, (1.0 if digest >> 63 == 0 else -1.0)


def _features(text: str):
    words = [w.lower() for w in _TOKEN.findall(text)]
    for word in words:
        yield "w:" + word, WORD
        padded = f"^{word}$"
        for i in range(len(padded) - 2):
            yield "t:" + padded[i : i + 3], TRIGRAM
    for first, second in zip(words, words[1:]):
        yield f"p:{first} {second}", PAIR


def embed_one(text: str) -> List[float]:
    vector = [0.0] * DIMENSION
    for feature, weight in _features(text):
        bucket, sign = _bucket(feature)
        vector[bucket] += sign * weight
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        return vector
    return [x / norm for x in vector]


class Embedder(exports.Embedder):
    def dimension(self) -> int:
        return DIMENSION

    def model(self) -> str:
        return MODEL

    @traced("pyhash.embed", kind=SpanKind.INTERNAL)
    def embed(self, texts: List[str]) -> List[List[float]]:
        add_span_attribute("embedder.texts", len(texts))
        with trace_span("pyhash.features", characters=sum(len(t) for t in texts)):
            vectors = [embed_one(text) for text in texts]
        counter_add("pyhash.texts", len(texts), unit="{text}")
        return vectors
