"""Every process's /metrics: valid for promtool, the pipeline gauges, and the counts of the
workers, the relay and the sweeper (issue 17, point 2)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy.exc import OperationalError

from services.common.metrics import PipelineCollector
from services.common.queue import PAYMENTS_QUEUE
from services.common.settings import PROCESS_NAMES, SERVICE_NAMES
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import paid
from tests.integration.webhook_receiver import Receiver, create_endpoint, wait_until
from tests.unit.test_alerts import alert_metrics

COUNTED_TIMEOUT_S = 60.0


def _scrape(platform: LocalPlatform, process: str) -> str:
    if process in SERVICE_NAMES:
        port = platform.settings.metrics_port(process)  # type: ignore[arg-type]
    else:
        port = platform.settings.process_metrics_port(process)  # type: ignore[arg-type]
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def _promtool_accepts(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make test` (Debian's prometheus)"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_service_serves_metrics_promtool_accepts(
    platform: LocalPlatform, service: str
) -> None:
    text = _scrape(platform, service)
    assert "paymesh_rpc_total" in text or "paymesh_rpc_duration_seconds" in text
    _promtool_accepts(text)


@pytest.mark.parametrize("process", PROCESS_NAMES)
def test_every_worker_relay_and_sweeper_serves_metrics_promtool_accepts(
    platform: LocalPlatform, process: str
) -> None:
    text = _scrape(platform, process)
    assert "process_cpu_seconds_total" in text
    _promtool_accepts(text)


def _total(platform: LocalPlatform, process: str, name: str, **labels: str) -> float:
    """A counter's value summed over the samples whose labels include `labels` (0 if none)."""
    return sum(
        value
        for (sample, sample_labels), value in _samples(_scrape(platform, process)).items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


# What a paid card payment, notified to one endpoint, makes each process count.
COUNTED = {
    "jobs": ("payment-worker", "paymesh_jobs_total", {"job": "process_payments"}),
    "driven": ("payment-worker", "paymesh_payments_driven_total", {"outcome": "succeeded"}),
    "relayed": ("payment-relay", "paymesh_outbox_relay_rows_total", {}),
    "attempts": ("webhook-worker", "paymesh_webhook_attempts_total", {"outcome": "delivered"}),
    "delivered": ("webhook-worker", "paymesh_jobs_total", {"job": "deliver"}),
}


def _counts(platform: LocalPlatform) -> dict[str, float]:
    return {key: _total(platform, p, name, **labels) for key, (p, name, labels) in COUNTED.items()}


def _pay_and_notify(platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys) -> None:
    """A card payment whose payment.succeeded reaches a receiver; waits until all is counted."""
    before = _counts(platform)
    with Receiver().running() as receiver:
        create_endpoint(api, merchant.secret_key, receiver.url("/hooks"), ["payment.succeeded"])
        payment = paid(api, merchant.secret_key)
        assert payment["status"] == "succeeded", payment
        receiver.wait_for("/hooks", 1, timeout_s=COUNTED_TIMEOUT_S)
        wait_until(
            lambda: all(after > before[key] for key, after in _counts(platform).items()),
            timeout_s=COUNTED_TIMEOUT_S,
        )


def test_a_paid_and_notified_payment_is_counted_by_each_process(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys
) -> None:
    _pay_and_notify(platform, api, merchant)
    assert _total(platform, "payment-relay", "paymesh_outbox_relay_rounds_total", outcome="ok") > 0
    for sweeper in ("payment-relay", "webhook-sweeper"):
        assert _total(platform, sweeper, "paymesh_sweeps_total", outcome="ok") > 0


def test_payment_pipeline_gauges(platform: LocalPlatform) -> None:
    samples = _samples(_scrape(platform, "payment"))
    for kind in ("job", "event"):
        assert samples[("paymesh_payment_outbox_pending", (("kind", kind),))] >= 0
        assert samples[("paymesh_payment_outbox_lag_seconds", (("kind", kind),))] >= 0
    for kind in ("payment", "refund", "payout", "dispute"):
        assert samples[("paymesh_payment_stuck", (("object", kind),))] >= 0
    assert samples[("paymesh_queue_jobs", (("queue", PAYMENTS_QUEUE),))] >= 0
    assert samples[("paymesh_pipeline_source_up", (("source", "database"),))] == 1
    assert samples[("paymesh_pipeline_source_up", (("source", "redis"),))] == 1


def test_webhook_gauges_follow_the_endpoints_and_deliveries(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys
) -> None:
    disabled = ("paymesh_webhook_endpoints_disabled", ())
    before = _samples(_scrape(platform, "webhook"))
    headers = {"X-API-Key": merchant.secret_key}
    endpoint = api.post(
        "/v1/webhook_endpoints",
        json={"url": "https://hooks.example.com/m", "enabled_events": ["*"]},
        headers=headers,
    ).json()
    patched = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}", json={"enabled": False}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    after = _samples(_scrape(platform, "webhook"))
    # Other tests may disable endpoints at the same time: at least this one more.
    assert after[disabled] >= before[disabled] + 1
    for status in ("pending", "failing", "dead"):
        assert after[("paymesh_webhook_deliveries", (("status", status),))] >= 0
    assert after[("paymesh_webhook_delivery_lateness_seconds", ())] >= 0


def test_the_alerts_and_dashboard_name_metrics_the_services_export(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys
) -> None:
    # Counters with labels appear once counted: a payment, paid and notified, counts them.
    _pay_and_notify(platform, api, merchant)
    exported = {
        sample.name
        for process in (*SERVICE_NAMES, *PROCESS_NAMES)
        for family in text_string_to_metric_families(_scrape(platform, process))
        for sample in family.samples
    }
    missing = alert_metrics() - exported
    assert not missing, f"the alerts or the dashboard name metrics nobody exports: {missing}"


@pytest.fixture
def unreachable_redis() -> Iterator[Redis]:
    redis = Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)
    yield redis
    redis.close()


def test_an_unreadable_source_is_reported_not_a_failed_scrape(unreachable_redis: Redis) -> None:
    def broken() -> list[object]:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    registry = CollectorRegistry()
    registry.register(
        PipelineCollector(
            read_database=broken,  # type: ignore[arg-type]
            redis=unreachable_redis,
            queues=[PAYMENTS_QUEUE],
        )
    )
    samples = _samples(generate_latest(registry).decode())
    assert samples[("paymesh_pipeline_source_up", (("source", "database"),))] == 0
    assert samples[("paymesh_pipeline_source_up", (("source", "redis"),))] == 0
    assert not any(name == "paymesh_queue_jobs" for name, _ in samples)
