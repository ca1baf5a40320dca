"""services/common/tracing.py: nothing at all when off; batches continue their items' traces."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import tracing
from services.common.errors import ConfigurationError


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (a provider of the test's own, not the process's global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def _traceparent(name: str) -> str:
    """The traceparent of a finished span of its own trace."""
    with tracing.span(name):
        value = tracing.current_traceparent()
    assert value is not None
    return value


def test_endpoint_address__a_url_or_host_and_port() -> None:
    assert tracing.endpoint_address("http://collector:4317") == ("collector", 4317)
    assert tracing.endpoint_address("127.0.0.1:14317") == ("127.0.0.1", 14317)


@pytest.mark.parametrize("value", ["http://collector", "collector", "http://:4317", "h:99999"])
def test_endpoint_address__without_a_host_or_port_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="PAYMESH_OTEL_ENDPOINT"):
        tracing.endpoint_address(value)


def test_off__installs_nothing_and_carries_nothing() -> None:
    assert tracing._tracer is None  # no test here configured the process
    assert tracing.server_interceptors() == []
    assert tracing.aio_client_interceptors() == []
    channel = grpc.insecure_channel("127.0.0.1:1")
    assert tracing.intercept(channel) is channel
    channel.close()
    assert tracing.current_traceparent() is None
    assert tracing.log_ids() is None
    # Contexts a row kept from when tracing was on are not handed on either.
    with tracing.batch("relay", ["00-" + "1" * 32 + "-" + "2" * 16 + "-01", None]) as onward:
        assert onward == [None, None]
    with tracing.job("job", []):
        assert tracing.job_traceparents(2) == [None, None]


def test_batch__a_child_of_its_first_item_linked_to_the_others(
    spans: InMemorySpanExporter,
) -> None:
    first, other = _traceparent("request a"), _traceparent("request b")
    with tracing.batch("relay", [first, other, first]) as onward:
        own = tracing.current_traceparent()
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "relay"]
    (request_a,) = [s for s in spans.get_finished_spans() if s.name == "request a"]
    (request_b,) = [s for s in spans.get_finished_spans() if s.name == "request b"]
    assert batch.parent is not None
    assert batch.parent.span_id == request_a.context.span_id
    assert batch.context.trace_id == request_a.context.trace_id
    assert [link.context.span_id for link in batch.links] == [request_b.context.span_id]
    # The first item's trace goes on from the batch's span; the other keeps its own context.
    assert onward == [own, other, own]


def test_job__hands_on_its_items_contexts_or_none(spans: InMemorySpanExporter) -> None:
    first = _traceparent("request")
    with tracing.job("job deliver", [first, None]):
        own = tracing.current_traceparent()
        assert tracing.job_traceparents(2) == [own, own]
        # A count other than the job's items: no context to hand on (a sweeper's job).
        assert tracing.job_traceparents(3) == [None, None, None]
    with tracing.job("job deliver", []):
        assert tracing.job_traceparents(1) == [None]
    (job, _) = [s for s in spans.get_finished_spans() if s.name == "job deliver"]
    assert job.parent is not None


def test_span__records_a_failed_step(spans: InMemorySpanExporter) -> None:
    with tracing.span("webhook attempt", traceparent=_traceparent("request")) as step:
        step.record({"http.response.status_code": 500}, error="HTTP 500")
    (attempt,) = [s for s in spans.get_finished_spans() if s.name == "webhook attempt"]
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 500
    assert not attempt.status.is_ok
    assert tracing.log_ids() is None  # nothing in progress any more
