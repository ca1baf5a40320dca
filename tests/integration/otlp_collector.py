"""Test support: an OTLP/gRPC trace receiver in the test process, and a text waterfall of a trace.

Both the Python exporter (services/common/tracing.py) and Envoy's OpenTelemetry tracer send
OTLP over gRPC, so one `TraceService` receives every span of the platform.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class Span:
    """One span as received: who sent it, its ids (hex), name, kind, times, attributes, links."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[str, ...]  # the trace ids it links to


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Stores the request's spans."""
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            service=str(resource.get("service.name", "")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple(link.trace_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self._spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, trace_id: str | None = None) -> list[Span]:
        """The spans received so far (of one trace), in start order."""
        with self._lock:
            found = [s for s in self._spans if trace_id is None or s.trace_id == trace_id]
        return sorted(found, key=lambda s: (s.start_ns, s.end_ns))


@contextmanager
def serving() -> Iterator[tuple[Collector, int]]:
    """A collector listening on a free port of 127.0.0.1 until the block ends."""
    collector = Collector()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, port
    finally:
        server.stop(grace=None)


def waterfall(spans: list[Span], *, width: int = 48) -> str:
    """A text waterfall of one trace: the span tree, each span's offset and duration, as bars."""
    by_id = {span.span_id: span for span in spans}
    children: dict[str, list[Span]] = {}
    roots = []
    for span in spans:
        if span.parent_id in by_id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    start = min(span.start_ns for span in spans)
    total = max(span.end_ns for span in spans) - start or 1
    lines = [f"trace {spans[0].trace_id}: {len(spans)} spans, {total / 1e6:.1f} ms", ""]

    def walk(span: Span, depth: int) -> None:
        offset = (span.start_ns - start) / 1e6
        duration = (span.end_ns - span.start_ns) / 1e6
        left = round((span.start_ns - start) / total * width)
        bar = " " * left + "█" * max(1, round((span.end_ns - span.start_ns) / total * width))
        # A gRPC span's name is its full method name: the service's short name suffices here.
        name = span.name.rpartition(".")[2] if span.name.startswith("/") else span.name
        label = f"{'  ' * depth}{span.service}: {name} ({span.kind.lower()})"
        if "http.response.status_code" in span.attributes:
            label += f" -> {span.attributes['http.response.status_code']}"
        lines.append(f"{label:<72} {offset:9.1f} {duration:8.1f}  |{bar:<{width + 1}}|")
        for child in sorted(children.get(span.span_id, []), key=lambda s: s.start_ns):
            walk(child, depth + 1)

    lines.append(f"{'service: span (kind)':<72} {'start ms':>9} {'dur ms':>8}")
    for root in roots:
        walk(root, 0)
    return "\n".join(lines) + "\n"
