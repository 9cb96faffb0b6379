"""World Weaver's guest SDK for Python components (built with componentize-py).

The original system's tracing API, over the host's ``ww:memory/tracing`` interface:

    from ww_guest import (SpanKind, add_span_attribute, add_span_event,
                          get_trace_context, trace_span, traced)

    @traced("episodic.recall", kind=SpanKind.INTERNAL)
    def recall(query):
        add_span_attribute("query.length", len(query))
        with trace_span("batch_processing", batch_size=100):
            add_span_event("scored", count=3)
        return get_trace_context()["traceparent"]

A span costs the two crossings a Rust span costs: ``start-span`` when it opens (name,
kind, the attributes given up front) and ``end-span`` when it closes (status, and every
attribute and event added meanwhile, buffered here). The host parents each span under the
innermost span open in the request, whichever component opened it, so a Python span nests
under the host's boundary span and anything the component calls through the host nests
under it.

Works in any world that imports ``ww:memory/tracing`` and ``ww:memory/metrics``: the
bindings componentize-py generates for the component (``wit_world``) are imported here.
"""

import contextvars
import functools
import inspect
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from wit_world.imports import metrics as _metrics
from wit_world.imports import tracing as _wit

__all__ = [
    "SpanKind",
    "traced",
    "trace_span",
    "add_span_attribute",
    "add_span_event",
    "get_trace_context",
    "counter_add",
    "histogram_record",
    "baggage_get",
    "baggage_set",
    "baggage_all",
]

#: OpenTelemetry span kinds: ``SpanKind.INTERNAL``, ``SERVER``, ``CLIENT``, ``PRODUCER``,
#: ``CONSUMER``.
SpanKind = _wit.SpanKind

# The same bounds as the Rust SDK: an i64 attribute beyond this is sent as text.
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _value(value: Any) -> Any:
    """A Python value as the WIT's typed attribute value (no JSON in a string)."""
    # bool first: it is an int too.
    if isinstance(value, bool):
        return _wit.Value_Bool(value)
    if isinstance(value, int) and _I64_MIN <= value <= _I64_MAX:
        return _wit.Value_S64(value)
    if isinstance(value, float):
        return _wit.Value_F64(value)
    if isinstance(value, str):
        return _wit.Value_String(value)
    if isinstance(value, (list, tuple)):
        items = list(value)
        if items and all(isinstance(v, bool) for v in items):
            return _wit.Value_BoolList(items)
        if items and all(
            isinstance(v, int) and not isinstance(v, bool) and _I64_MIN <= v <= _I64_MAX
            for v in items
        ):
            return _wit.Value_S64List(items)
        if items and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
        ):
            return _wit.Value_F64List([float(v) for v in items])
        return _wit.Value_StringList([str(v) for v in items])
    return _wit.Value_String(str(value))


def _attributes(attributes: Dict[str, Any]) -> List[Any]:
    return [_wit.KeyValue(str(k), _value(v)) for k, v in attributes.items()]


class _Span:
    """An open span: the host's handle and what waits for ``end-span``."""

    __slots__ = ("handle", "attributes", "events", "status", "exception")

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.attributes: List[Any] = []
        self.events: List[Any] = []
        self.status: Any = _wit.Status_Unset()
        self.exception: Optional[Any] = None

    def fail(self, error: BaseException) -> None:
        """ERROR with the semantic-convention ``exception`` event."""
        message = str(error) or type(error).__name__
        self.status = _wit.Status_Error(message)
        self.exception = _wit.Exception(
            type(error).__qualname__,
            message,
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )

    def end(self) -> None:
        _wit.end_span(self.handle, self.status, self.attributes, self.events, self.exception)


# The innermost span this component opened, per task: `async` code running several
# tasks keeps each task's attributes on its own span.
_current: contextvars.ContextVar[Optional[_Span]] = contextvars.ContextVar(
    "ww_guest_span", default=None
)


class trace_span:
    """A span around a block: ``with trace_span("name", key=value):`` or
    ``async with trace_span(...)``. Keyword arguments become its first attributes;
    ``kind=`` sets its kind. An exception leaving the block marks the span ERROR with an
    ``exception`` event and goes on."""

    def __init__(self, name: str, kind: Any = None, **attributes: Any) -> None:
        self._name = name
        self._kind = SpanKind.INTERNAL if kind is None else kind
        self._attributes = attributes
        self._span: Optional[_Span] = None
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> "trace_span":
        handle = _wit.start_span(self._name, self._kind, _attributes(self._attributes), None)
        self._span = _Span(handle)
        self._token = _current.set(self._span)
        return self

    def __exit__(self, kind: Any, error: Optional[BaseException], _tb: Any) -> bool:
        span = self._span
        if self._token is not None:
            _current.reset(self._token)
        if span is not None:
            if error is not None:
                span.fail(error)
            span.end()
        return False

    async def __aenter__(self) -> "trace_span":
        return self.__enter__()

    async def __aexit__(self, kind: Any, error: Optional[BaseException], tb: Any) -> bool:
        return self.__exit__(kind, error, tb)

    def set_attribute(self, key: str, value: Any) -> None:
        """An attribute on this span (sent when it ends)."""
        if self._span is not None:
            self._span.attributes.append(_wit.KeyValue(key, _value(value)))

    def set_ok(self) -> None:
        """Mark this span OK."""
        if self._span is not None:
            self._span.status = _wit.Status_Ok()


def traced(name: str, kind: Any = None) -> Callable:
    """A decorator: a span named ``name`` around every call of the function, plain or
    ``async``. An exception marks the span ERROR with an ``exception`` event and is
    re-raised."""

    def decorate(function: Callable) -> Callable:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                async with trace_span(name, kind):
                    return await function(*args, **kwargs)

            return traced_async

        @functools.wraps(function)
        def traced_sync(*args: Any, **kwargs: Any) -> Any:
            with trace_span(name, kind):
                return function(*args, **kwargs)

        return traced_sync

    return decorate


def add_span_attribute(key: str, value: Any) -> None:
    """An attribute on the current span: the innermost this component opened (sent when
    it ends), else the request's innermost span, at once."""
    span = _current.get()
    if span is not None:
        span.attributes.append(_wit.KeyValue(key, _value(value)))
    else:
        _wit.set_attributes(0, [_wit.KeyValue(key, _value(value))])


def add_span_event(name: str, attributes: Optional[Dict[str, Any]] = None, **more: Any) -> None:
    """An event on the current span, timestamped now; attributes as a dict or keywords."""
    values = dict(attributes or {}, **more)
    event = _wit.Event(name, time.time_ns(), _attributes(values))
    span = _current.get()
    if span is not None:
        span.events.append(event)
    else:
        _wit.add_event(0, event)


def get_trace_context() -> Dict[str, str]:
    """The W3C context of the request's innermost span (this component's open span when
    there is one), to inject into an outgoing call:
    ``{'traceparent': ..., 'tracestate': ...}``."""
    context = _wit.current_context()
    return {"traceparent": context.traceparent, "tracestate": context.tracestate}


def counter_add(name: str, value: float = 1.0, unit: str = "1", **attributes: Any) -> None:
    """Add to a counter of this component (the request's span is its exemplar)."""
    _metrics.counter_add(name, unit, float(value), _attributes(attributes))


def histogram_record(name: str, value: float, unit: str = "s", **attributes: Any) -> None:
    """Record into a histogram of this component (``s`` and ``ms`` get duration buckets)."""
    _metrics.histogram_record(name, unit, float(value), _attributes(attributes))


def baggage_get(key: str) -> Optional[str]:
    """A baggage entry the request carries."""
    return _wit.baggage_get(key)


def baggage_set(key: str, value: str) -> bool:
    """Set a baggage entry that travels on with the request; False when refused."""
    return _wit.baggage_set(key, value)


def baggage_all() -> Dict[str, str]:
    """Every baggage entry of the request."""
    return dict(_wit.baggage_all())
