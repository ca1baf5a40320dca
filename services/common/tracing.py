"""OpenTelemetry tracing: one trace per merchant request, from the edge to the webhook.

Off unless `PAYMESH_OTEL_ENDPOINT` is set: then `configure` installs nothing, every function
here answers at once (no span, no traceparent, no interceptor), and no call is wrapped. On, each
process exports its spans over OTLP/gRPC to that endpoint in batches, the gRPC servers and
channels get OpenTelemetry's own interceptors (which carry the W3C `traceparent` in gRPC
metadata), and the hops that are not calls carry the context as data, in W3C `traceparent` form
(OpenTelemetry's propagator writes and reads it):

- an outbox row stores the traceparent of the request (or job) that wrote it;
- an RQ job keeps, in its meta, one traceparent per item it carries (a payment, an attempt);
- a published event carries its own in `PublishEventRequest.traceparent`, and the webhook
  service stores it with the event, so every attempt of its deliveries (retries too) continues it.

Work moves in batches (a relay round, a job of 50 payments, one PublishEvents call), and a span
has one parent. So a batch's span (`batch`) is a child of its first item's context and links to
the others'; what the batch hands on continues the first item's trace from the batch's span and
every other item's trace from its own context. With one payment in flight, as in the test,
every hop is one chain of parents; under load each payment keeps one trace, and the hops it
shared with others appear in it as links.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from services.common.errors import ConfigurationError

logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
# Version 00 of a W3C traceparent is 55 characters; later versions may append fields.
TRACEPARENT_LENGTH_MAX = 128

# Set by `configure` when tracing is on; None keeps every function here a no-op.
_tracer: Any = None


def endpoint_address(endpoint: str) -> tuple[str, int]:
    """The host and port of an OTLP/gRPC endpoint (`http://host:4317`, or `host:4317`)."""
    try:
        parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(f"PAYMESH_OTEL_ENDPOINT: {error}") from error
    if parts.hostname is None or port is None:
        raise ConfigurationError(
            f"PAYMESH_OTEL_ENDPOINT needs a host and a port (http://host:4317): {endpoint!r}"
        )
    return parts.hostname, port


def configure(endpoint: str | None, *, service: str) -> None:
    """Exports this process's spans to `endpoint` as `service`; nothing at all when None."""
    global _tracer  # noqa: PLW0603 - one tracer provider per process, as OpenTelemetry has
    if not endpoint:
        return
    # Imported only when on: a process that does not trace loads only the API (no SDK, no
    # exporter, no instrumentation).
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    host, port = endpoint_address(endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{host}:{port}", insecure=True))
    )
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("paymesh")
    logger.info("tracing to %s:%d", host, port)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The interceptor that starts a server span per call (from the caller's context); or none."""
    if _tracer is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415
    from opentelemetry.instrumentation.grpc.filters import health_check, negate  # noqa: PLC0415

    # Health checks (Envoy's, every 2 s per service) are no one's request: no trace.
    return [aio_server_interceptor(filter_=negate(health_check()))]  # type: ignore[no-untyped-call]


def aio_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that start a client span per call and send its context; or none."""
    if _tracer is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors  # noqa: PLC0415

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def intercept(channel: grpc.Channel) -> grpc.Channel:
    """`channel` with a client span per call and its context sent along; as it is when off."""
    if _tracer is None:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor  # noqa: PLC0415
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel  # noqa: PLC0415

    # OpenTelemetry's own wrapper: its interceptor is not one of grpc's interceptor classes.
    return intercept_channel(channel, client_interceptor())  # type: ignore[no-untyped-call,no-any-return]


def current_traceparent() -> str | None:
    """The W3C traceparent of the span in progress, to store with work handed on; or None."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def _context(traceparent: str | None) -> Any:
    return propagate.extract({TRACEPARENT: traceparent} if traceparent else {})


class Step:
    """What a step's code may add to its span (`span`); does nothing when tracing is off."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def record(self, attributes: Mapping[str, Any], *, error: str | None = None) -> None:
        """Adds the step's outcome to its span; `error` marks the span failed."""
        if self._span is None:
            return
        self._span.set_attributes(dict(attributes))
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, error))


_OFF = Step()


@contextmanager
def span(
    name: str,
    *,
    traceparent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Step]:
    """A span for a step: a child of `traceparent` when given, else of the span in progress."""
    if _tracer is None:
        yield _OFF
        return
    context = _context(traceparent) if traceparent else None
    with _tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield Step(current)


@contextmanager
def batch(
    name: str,
    traceparents: Sequence[str | None],
    *,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
) -> Iterator[list[str | None]]:
    """A span for work on a batch of items, each with the traceparent it came with.

    The span is a child of the first item's context (a root when it has none) and links to
    the other items' contexts. Yields each item's traceparent to hand on: the span's own for
    the items in its trace, an item's own otherwise. When off, yields `traceparents` as given.
    """
    if _tracer is None:
        yield [None] * len(traceparents)
        return
    first = next((value for value in traceparents if value), None)
    links = [
        Link(trace.get_current_span(_context(value)).get_span_context())
        for value in dict.fromkeys(traceparents)
        if value and value != first
    ]
    with _tracer.start_as_current_span(
        name,
        context=_context(first),
        kind=kind,
        links=links,
        attributes={**(attributes or {}), "paymesh.batch.size": len(traceparents)},
    ):
        yield onward(traceparents)


def onward(traceparents: Sequence[str | None]) -> list[str | None]:
    """Each item's traceparent to hand on from the span in progress (None for all when off).

    An item of the span's own trace continues from the span; any other keeps its own context.
    """
    if _tracer is None:
        return [None] * len(traceparents)
    own = current_traceparent()
    context = trace.get_current_span().get_span_context()
    trace_id = format(context.trace_id, "032x") if context.is_valid else None
    return [
        own if value is None or trace_id_of(value) == trace_id else value for value in traceparents
    ]


def trace_id_of(traceparent: str | None) -> str:
    """The trace id in a W3C traceparent (version-traceid-spanid-flags); "" for none."""
    return traceparent.split("-")[1] if traceparent and traceparent.count("-") >= 3 else ""


# The traceparents of the items of the job in hand, one per item (`job`).
_job_items_var: contextvars.ContextVar[tuple[str | None, ...]] = contextvars.ContextVar(
    "job_traceparents", default=()
)


@contextmanager
def job(
    name: str,
    traceparents: Sequence[str | None],
    *,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Runs a job of the worker in a `batch` span (none when off) over its items' contexts."""
    if _tracer is None:
        yield
        return
    with batch(name, traceparents, attributes=attributes) as items:
        token = _job_items_var.set(tuple(items))
        try:
            yield
        finally:
            _job_items_var.reset(token)


def job_traceparents(count: int) -> list[str | None]:
    """The traceparents to hand on for the `count` items of the job in hand.

    None for each when the job came with no context for its items (tracing off, or a job a
    sweeper enqueued): the items' own stored contexts, if any, then apply.
    """
    items = _job_items_var.get()
    if len(items) != count:
        return [None] * count
    return list(items)


def log_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the span in progress, in hex, for log lines; or None."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
