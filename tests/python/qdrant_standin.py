"""A stand-in for a Qdrant server, for the Qdrant adapter's tests where no Qdrant can be
installed: the REST endpoints the adapter uses, in memory, with Qdrant's documented
behaviour (cosine scores, payload filters, inclusive scroll offsets, `wait=true` writes,
`{"result", "status", "time"}` answers and `{"status": {"error"}}` refusals), sparse
vectors with the `idf` modifier, and the Query API's prefetches fused by reciprocal rank
fusion as Qdrant's source computes it (`1 / (k + position)`, position from 0, k 2 unless
given).

Every request body is validated against the request models of `qdrant-client` (generated
from Qdrant's OpenAPI description, unknown fields forbidden), so a request the real server
would refuse fails here too. Requests are recorded (method, path, headers, body) for the
tests.
"""

from __future__ import annotations

import http.server
import json
import math
import re
import threading
from typing import Any

import numpy
from qdrant_client.http import models

ROUTES: list[tuple[str, str, type | None, str]] = [
    ("GET", r"/collections", None, "list"),
    ("GET", r"/collections/(?P<c>[\w-]+)", None, "info"),
    ("PUT", r"/collections/(?P<c>[\w-]+)", models.CreateCollection, "create"),
    ("PATCH", r"/collections/(?P<c>[\w-]+)", models.UpdateCollection, "update"),
    ("DELETE", r"/collections/(?P<c>[\w-]+)", None, "drop"),
    ("PUT", r"/collections/(?P<c>[\w-]+)/index", models.CreateFieldIndex, "index"),
    ("PUT", r"/collections/(?P<c>[\w-]+)/points", models.PointsList, "upsert"),
    ("POST", r"/collections/(?P<c>[\w-]+)/points", models.PointRequest, "retrieve"),
    ("POST", r"/collections/(?P<c>[\w-]+)/points/query", models.QueryRequest, "query"),
    ("POST", r"/collections/(?P<c>[\w-]+)/points/delete", models.PointIdsList, "delete"),
    ("POST", r"/collections/(?P<c>[\w-]+)/points/batch", models.UpdateOperations, "batch"),
    ("POST", r"/collections/(?P<c>[\w-]+)/points/count", models.CountRequest, "count"),
    ("POST", r"/collections/(?P<c>[\w-]+)/points/scroll", models.ScrollRequest, "scroll"),
]


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def matches(payload: dict[str, Any], condition: dict[str, Any], pid: str | None = None) -> bool:
    if "must" in condition or "must_not" in condition or "should" in condition:
        return passes(payload, condition, pid)
    if "has_id" in condition:
        return pid is not None and pid in {str(i) for i in condition["has_id"]}
    if "is_empty" in condition:
        value = payload.get(condition["is_empty"]["key"])
        return value is None or value == []
    key = condition["key"]
    value = payload.get(key)
    values = value if isinstance(value, list) else [value]
    if "match" in condition:
        match = condition["match"]
        if "value" in match:
            return any(v == match["value"] and type(v) is type(match["value"]) for v in values)
        if "any" in match:
            return any(v in match["any"] for v in values)
        raise Refusal(400, f"unsupported match {match}")
    if "range" in condition:
        bounds = condition["range"]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return any(
            (bounds.get("gte") is None or v >= bounds["gte"])
            and (bounds.get("lte") is None or v <= bounds["lte"])
            and (bounds.get("gt") is None or v > bounds["gt"])
            and (bounds.get("lt") is None or v < bounds["lt"])
            for v in numbers
        )
    raise Refusal(400, f"unsupported condition {condition}")


def passes(payload: dict[str, Any], filter_: dict[str, Any] | None, pid: str | None = None) -> bool:
    if not filter_:
        return True
    must = filter_.get("must") or []
    must_not = filter_.get("must_not") or []
    should = filter_.get("should") or []
    return (
        all(matches(payload, c, pid) for c in must)
        and not any(matches(payload, c, pid) for c in must_not)
        and (not should or any(matches(payload, c, pid) for c in should))
    )


def normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


class Listening(http.server.ThreadingHTTPServer):
    """A threading HTTP server with a listen backlog like a real server's (Qdrant's
    actix-web: 2048). Python's default of 5 drops connections once a few clients open
    them at once, and the adapter's 3-second connect timeout then fails a call that the
    real Qdrant would have taken."""

    request_queue_size = 1024


class QdrantStandIn:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.collections: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        # Bytes of junk the next query answer carries (a test's way to make the adapter
        # run out of memory on one call); 0: none.
        self.oversize_next_query = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, answer = owner.handle(self.command, self.path, dict(self.headers), raw)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any

        self.handler = Handler
        self.httpd = Listening(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def go_down(self) -> None:
        """Stop answering and close the port, as a Qdrant process that died (the data
        stays, as a real Qdrant's does on disk)."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def come_back(self) -> None:
        """Serve again on the same port."""
        port = self.httpd.server_address[1]
        self.httpd = Listening(("127.0.0.1", port), self.handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        path, _, query = target.partition("?")
        headers = {k.lower(): v for k, v in headers.items()}
        body_json = json.loads(raw) if raw else None
        self.requests.append({"method": method, "path": path, "query": query, "headers": headers, "body": body_json})
        try:
            if self.api_key is not None and headers.get("api-key") != self.api_key:
                raise Refusal(401, "Must provide an API key or an Authorization bearer token")
            for route_method, pattern, model, action in ROUTES:
                found = re.fullmatch(pattern, path)
                if route_method == method and found:
                    body = body_json
                    if model is not None:
                        try:
                            model.model_validate(body)
                        except Exception as e:  # pydantic's ValidationError
                            raise Refusal(400, f"Format error in JSON body: {e}") from None
                    # Answered from a copy taken under the lock: the live payloads must
                    # not change while the answer is serialised (a reader would see half
                    # of another request's write, which Qdrant never shows).
                    with self.lock:
                        result = getattr(self, action)(found.groupdict().get("c"), body)
                        result = json.loads(json.dumps(result))
                    return 200, {"result": result, "status": "ok", "time": 0.0001}
            raise Refusal(404, f"no route {method} {path}")
        except Refusal as refusal:
            return refusal.status, {"status": {"error": str(refusal)}, "time": 0.0}

    def collection(self, name: str) -> dict[str, Any]:
        if name not in self.collections:
            raise Refusal(404, f"Not found: Collection `{name}` doesn't exist!")
        return self.collections[name]

    def list(self, _: None, __: None) -> Any:
        return {"collections": [{"name": n} for n in sorted(self.collections)]}

    def info(self, name: str, _: None) -> Any:
        c = self.collection(name)
        return {
            "status": "green",
            "points_count": len(c["points"]),
            "config": {
                "params": {
                    "vectors": {"size": c["size"], "distance": c["distance"]},
                    **({"sparse_vectors": c["sparse"]} if c["sparse"] else {}),
                },
                "metadata": c["metadata"],
            },
            "payload_schema": c["indexes"],
        }

    def create(self, name: str, body: dict[str, Any]) -> Any:
        if name in self.collections:
            raise Refusal(409, f"Wrong input: Collection `{name}` already exists!")
        vectors = body["vectors"]
        self.collections[name] = {
            "size": vectors["size"],
            "distance": vectors["distance"],
            "points": {},
            "indexes": {},
            "metadata": dict(body.get("metadata") or {}),
            "sparse": dict(body.get("sparse_vectors") or {}),
        }
        return True

    def update(self, name: str, body: dict[str, Any]) -> Any:
        # Qdrant merges metadata; a key set to null is removed.
        metadata = self.collection(name)["metadata"]
        for key, value in (body.get("metadata") or {}).items():
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = value
        return True

    def drop(self, name: str, _: None) -> Any:
        return self.collections.pop(name, None) is not None

    def index(self, name: str, body: dict[str, Any]) -> Any:
        self.collection(name)["indexes"][body["field_name"]] = {"data_type": body["field_schema"]}
        return {"operation_id": 0, "status": "completed"}

    def upsert(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        for point in body["points"]:
            vector = point["vector"]
            sparse: dict[str, dict[int, float]] = {}
            if isinstance(vector, dict):
                named = dict(vector)
                if "" not in named:
                    raise Refusal(400, "Wrong input: the stand-in needs the default dense vector")
                vector = named.pop("")
                for vname, sv in named.items():
                    if vname not in c["sparse"]:
                        raise Refusal(400, f"Wrong input: Not existing vector name error: {vname}")
                    if len(sv["indices"]) != len(sv["values"]) or len(set(sv["indices"])) != len(sv["indices"]):
                        raise Refusal(400, "Wrong input: sparse indices must be distinct, one value each")
                    sparse[vname] = dict(zip(sv["indices"], sv["values"]))
            if len(vector) != c["size"]:
                raise Refusal(400, f"Wrong input: Vector dimension error: expected dim: {c['size']}, got {len(vector)}")
            vector = normalised(vector) if c["distance"] == "Cosine" else vector
            c["points"][str(point["id"])] = {"vector": vector, "sparse": sparse, "payload": point.get("payload") or {}}
        return {"operation_id": 0, "status": "completed"}

    def record(self, pid: str, point: dict[str, Any], with_payload: bool, with_vector: bool, score: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": pid, "version": 0}
        if score is not None:
            out["score"] = score
        out["payload"] = point["payload"] if with_payload else None
        vector: Any = point["vector"]
        if point["sparse"]:
            vector = {"": vector, **{
                n: {"indices": list(sv), "values": list(sv.values())} for n, sv in point["sparse"].items()
            }}
        out["vector"] = vector if with_vector else None
        return out

    def retrieve(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        ids = [str(i) for i in body["ids"]]
        return [
            self.record(i, c["points"][i], body.get("with_payload", True) is not False, bool(body.get("with_vector")))
            for i in ids
            if i in c["points"]
        ]

    def ranked(self, c: dict[str, Any], request: dict[str, Any]) -> list[tuple[float, str]]:
        """(score, id) of the points a query or prefetch finds, best first."""
        candidates = [
            (pid, p) for pid, p in c["points"].items() if passes(p["payload"], request.get("filter"))
        ]
        query = request.get("query")
        using = request.get("using")
        if isinstance(query, list) and using in (None, ""):
            query = normalised(query)
            if len(query) != c["size"]:
                raise Refusal(400, f"Wrong input: Vector dimension error: expected dim: {c['size']}, got {len(query)}")
            if not candidates:
                return []
            # numpy (a dependency of qdrant-client) for the dot products: the recall
            # benchmark searches thousands of points per question through this stand-in.
            scores = numpy.asarray([p["vector"] for _, p in candidates]) @ numpy.asarray(query)
            hits = [(float(score), pid) for score, (pid, _) in zip(scores, candidates)]
        elif isinstance(query, dict) and "indices" in query:
            if using not in c["sparse"]:
                raise Refusal(400, f"Wrong input: Not existing vector name error: {using}")
            weights = dict(zip(query["indices"], query["values"]))
            idf = {i: 1.0 for i in weights}
            if c["sparse"][using].get("modifier") == "idf":
                # Qdrant's IDF over the points that have this sparse vector.
                having = [p["sparse"][using] for p in c["points"].values() if using in p["sparse"]]
                n = len(having)
                for i in weights:
                    df = sum(1 for sv in having if i in sv)
                    idf[i] = math.log((n - df + 0.5) / (df + 0.5) + 1.0)
            hits = []
            for pid, p in candidates:
                sv = p["sparse"].get(using)
                if sv is None or not any(i in sv for i in weights):
                    continue
                hits.append((sum(w * sv[i] * idf[i] for i, w in weights.items() if i in sv), pid))
        else:
            raise Refusal(400, f"the stand-in does not serve the query {query!r}")
        hits.sort(key=lambda h: (-h[0], h[1]))
        return hits

    def query(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        prefetches = body.get("prefetch") or []
        if isinstance(prefetches, dict):
            prefetches = [prefetches]
        if prefetches:
            query = body.get("query") or {}
            if query.get("fusion") == "rrf":
                k, weights = 2, None
            elif "rrf" in query:
                k = query["rrf"].get("k") or 2
                weights = query["rrf"].get("weights")
            else:
                raise Refusal(400, f"the stand-in fuses prefetches by rrf only, not {query!r}")
            fused: dict[str, float] = {}
            for n, prefetch in enumerate(prefetches):
                if prefetch.get("prefetch"):
                    raise Refusal(400, "the stand-in serves one level of prefetch")
                weight = weights[n] if weights else 1.0
                found = self.ranked(c, prefetch)[: prefetch.get("limit") or 10]
                for position, (_, pid) in enumerate(found):
                    fused[pid] = fused.get(pid, 0.0) + 1.0 / ((position + 1) / weight + k - 1.0)
            hits = sorted(((score, pid) for pid, score in fused.items()
                           if passes(c["points"][pid]["payload"], body.get("filter"))),
                          key=lambda h: (-h[0], h[1]))
        else:
            hits = self.ranked(c, body)
        offset = body.get("offset") or 0
        chosen = hits[offset : offset + (body.get("limit") or 10)]
        if self.oversize_next_query:
            junk, self.oversize_next_query = "x" * self.oversize_next_query, 0
            return {"points": [{"id": str(i), "version": 0, "score": 0.5, "payload": {"junk": junk}} for i in range(1)]}
        return {
            "points": [
                self.record(pid, c["points"][pid], bool(body.get("with_payload")), bool(body.get("with_vector")), score)
                for score, pid in chosen
            ]
        }

    def delete(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        for pid in body["points"]:
            c["points"].pop(str(pid), None)
        return {"operation_id": 0, "status": "completed"}

    def batch(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        for operation in body["operations"]:
            (kind, args), = operation.items()
            if kind != "set_payload":
                raise Refusal(400, f"unsupported operation {kind}")
            # By ids, or by a filter (which may name ids: `has_id`), as Qdrant does; the
            # whole batch runs under the lock, as a shard applies its updates in order.
            if args.get("points") is not None:
                targets = [str(pid) for pid in args["points"] if str(pid) in c["points"]]
            else:
                targets = [pid for pid, p in c["points"].items() if passes(p["payload"], args["filter"], pid)]
            for pid in targets:
                c["points"][pid]["payload"].update(args["payload"])
        return [{"operation_id": 0, "status": "completed"}]

    def count(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        return {"count": sum(1 for p in c["points"].values() if passes(p["payload"], body.get("filter")))}

    def scroll(self, name: str, body: dict[str, Any]) -> Any:
        c = self.collection(name)
        ids = sorted(pid for pid, p in c["points"].items() if passes(p["payload"], body.get("filter")))
        offset = body.get("offset")
        if offset is not None:
            ids = [i for i in ids if i >= str(offset)]
        limit = body.get("limit") or 10
        page, rest = ids[:limit], ids[limit:]
        return {
            "points": [
                self.record(i, c["points"][i], body.get("with_payload") is not False, bool(body.get("with_vector")))
                for i in page
            ],
            "next_page_offset": rest[0] if rest else None,
        }


if __name__ == "__main__":
    import sys
    import time

    server = QdrantStandIn(api_key=sys.argv[1] if len(sys.argv) > 1 else None)
    print(server.url, flush=True)
    while True:
        time.sleep(3600)
