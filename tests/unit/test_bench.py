"""The benchmark harness (bench/): parsers, figures, the table, the receiver, the wrk scripts.

Nothing here measures or asserts on speed: these check that the harness computes and reports
what it claims, so `make bench` figures can be trusted.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from bench import loadgen, rates, receiver, report, resources
from bench.run import end_to_end_rows, latency_series, rows_from, summarise_stacks

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _wrk_line(requests: int, duration_us: int, p50: int, p99: int, status: int = 0) -> str:
    return "PAYMESH_WRK " + json.dumps(
        {
            "requests": requests,
            "duration_us": duration_us,
            "bytes": 1,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": status, "timeout": 0},
            "latency_us": {"p50": p50, "p90": p99, "p99": p99, "max": p99, "mean": p50},
        }
    )


def test_parse_wrk__reads_the_report_line_among_wrk_output() -> None:
    output = "Running 1s test\n  2 threads\n" + _wrk_line(10, 1_000_000, 2000, 9000) + "\n"
    assert loadgen.parse_wrk(output)["requests"] == 10


def test_parse_wrk__without_the_report_line_is_an_error() -> None:
    with pytest.raises(loadgen.LoadGeneratorError):
        loadgen.parse_wrk("Running 1s test\nunable to connect\n")


def test_merge_slices__totals_and_request_weighted_percentiles() -> None:
    slices = [
        (0.0, json.loads(_wrk_line(100, 1_000_000, 10_000, 20_000)[12:])),
        (1.0, json.loads(_wrk_line(300, 1_000_000, 30_000, 60_000, status=3)[12:])),
    ]
    run = loadgen.merge_slices(slices)
    assert run.requests == 400
    assert run.duration_s == 2.0
    assert run.rps == 200.0
    assert run.p50_ms == 25.0  # (100 * 10 + 300 * 30) / 400
    assert run.p99_ms == 50.0
    assert run.errors == 3
    assert [p.rps for p in run.series] == [100.0, 300.0]
    assert loadgen.merge_slices(slices, ok_status=False).errors == 0


def test_parse_pgbench_log__exact_percentiles_and_slices() -> None:
    # client, transaction, latency_us, script, epoch_s, epoch_us: 10 per second for 4 s.
    lines = [
        f"0 {i} {1000 * (i % 10 + 1)} 0 {1_700_000_000 + i // 10} {(i % 10) * 100_000}"
        for i in range(40)
    ]
    run = loadgen.parse_pgbench_log(lines, slice_s=2)
    assert run.requests == 40
    assert run.p50_ms == 5.0
    assert run.p99_ms == 10.0
    assert [p.t_s for p in run.series] == [0, 2]
    assert all(9 <= p.rps <= 11 for p in run.series)  # 10 transactions a second


def test_parse_pgbench_log__no_transactions_is_an_error() -> None:
    with pytest.raises(loadgen.LoadGeneratorError):
        loadgen.parse_pgbench_log(["garbage"], slice_s=1)


def test_percentile__nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50.0
    assert loadgen.percentile(values, 99) == 99.0
    assert loadgen.percentile([], 99) == 0.0


def test_ratio_row__judges_against_the_baseline() -> None:
    met = report.ratio_row(
        "s", "f", 60.0, "/s", baseline_name="b", baseline=100.0, baseline_unit="/s", goal_ratio=0.6
    )
    missed = report.ratio_row(
        "s", "f", 59.0, "/s", baseline_name="b", baseline=100.0, baseline_unit="/s", goal_ratio=0.6
    )
    missing = report.ratio_row(
        "s", "f", 59.0, "/s", baseline_name="b", baseline=None, baseline_unit="/s", goal_ratio=0.6
    )
    assert (met.ratio, met.met) == (0.6, True)
    assert missed.met is False
    assert (missing.ratio, missing.met) == (None, None)


def test_rows_from__every_goal_of_the_issue_gets_a_row() -> None:
    results: dict[str, Any] = {
        "pgbench_c8": {"rps": 400.0, "p50_ms": 10.0, "p99_ms": 30.0},
        "pgbench_c32": {"rps": 500.0, "p50_ms": 40.0, "p99_ms": 90.0},
        "noop_health_c32": {"rps": 2000.0, "p50_ms": 5.0, "p99_ms": 20.0},
        "get_existing_c32": {"rps": 900.0, "payment_cpu_ms_per_request": 1.5},
        "create_payment_c32": {"rps": 250.0, "p50_ms": 60.0, "p99_ms": 150.0},
        "create_card_c32": {"rps": 80.0, "errors": 0, "payment_cpu_ms_per_request": 9.0},
        "ledger_c8": {"rps": 200.0},
        "ledger_c32": {"rps": 150.0},
        "end_to_end": {
            "rps": 80.0,
            "p50_ms": 200.0,
            "p99_ms": 900.0,
            "backlog_at_end": {"total": 10.0},
            "backlog_bound": 375.0,
            "backlog_bounded": True,
            "offered_rate": 75.0,
        },
        "webhook_fanout": {"deliveries_per_s": 70.0, "noop_jobs_per_s": 100.0},
        "webhook_sustained": {"deliveries_per_s": 320.0, "cpu_ms_per_delivery": {"webhook": 0.2}},
        "memory": {
            "idle_rss_mib": {"payment": 90.0, "postgres": 400.0},
            "loaded_peak_rss_mib": {"payment": 320.0, "redis": 10.0},
        },
        "startup": {"warm_s": 9.0, "cold_s": 30.0},
    }
    rows = rows_from(results)
    judged = {(r.scenario, r.figure, r.baseline.split(" ")[0]): r.met for r in rows if r.goal}
    assert judged[("2 GET existing payment c32", "throughput", "no-op")] is True  # 0.45 >= 0.4
    assert judged[("2 create payment c32", "throughput", "pgbench")] is True  # 0.5 >= 0.25
    assert judged[("2 create payment c32", "throughput", "no-op")] is False  # 0.125 < 0.5
    assert judged[("2 create payment c32", "p99", "")] is False
    assert judged[("3 ledger postings c8", "throughput", "pgbench")] is True
    assert judged[("3 ledger postings c32", "c32/c8 kept", "pgbench")] is False  # 0.75 < 0.8
    assert judged[("2 create with card c32", "throughput", "pgbench")] is True  # 0.16 >= 0.15
    assert judged[("4 end to end", "payments/s sustained", "offered")] is True  # 80 >= 0.95 * 75
    assert judged[("4 end to end", "backlog at end of load", "offered")] is True
    assert judged[("5 webhook fan-out", "deliveries/s", "no-op")] is False  # 0.7 < 0.8
    assert judged[("5 webhook one endpoint", "deliveries/s sustained", "")] is True  # >= 300
    assert judged[("6 resources", "idle RSS max (payment)", "postgres")] is True  # not postgres
    assert judged[("6 resources", "loaded RSS max (payment)", "postgres")] is False
    assert judged[("6 resources", "warm start -> healthy", "")] is True
    text = report.table(rows)
    header = ["scenario", "figure", "value", "same-run", "baseline", "ratio", "goal", "status"]
    assert text.splitlines()[0].split() == header
    assert "NOT MET" in text


def test_summarise_stacks__self_shares_and_paymesh_frames_inclusive() -> None:
    lines = [
        "main (x.py:1);handle (services/payment/server.py:10);execute (psycopg/c.py:5) 6",
        "main (x.py:1);handle (services/payment/server.py:10);dumps (json/e.py:3) 3",
        "main (x.py:1);select (selectors.py:1) 1",
        "garbage",
    ]
    summary = summarise_stacks(lines)
    assert summary["samples"] == 10
    assert summary["project"] == [("handle (services/payment/server.py:10)", 0.9)]
    assert dict(summary["self"])["execute (psycopg/c.py:5)"] == 0.6


def test_latency_series__per_slice_of_receive_time() -> None:
    start = 1_000_000_000
    arrivals: list[list[Any]] = [
        [start + 100_000, start, "payment.succeeded", "/e"],  # 100 ms
        [start + 1_300_000, start + 1_000_000, "payment.succeeded", "/e"],  # 300 ms
        [start + 1_500_000, None, "payment.succeeded", "/e"],  # no send time: left out
    ]
    points = latency_series(arrivals, start_us=start, slice_s=1)
    assert [(p.t_s, p.rps, p.p50_ms) for p in points] == [(0, 1.0, 100.0), (1, 1.0, 300.0)]


@pytest.fixture
def hooks() -> Iterator[str]:
    """The benchmark receiver on a free port, in this process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.make_handler(receiver.Ledger([SECRET])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _signed(body: bytes, secret: str, event_id: str) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(event_id, now, body.decode())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def test_receiver__records_signed_events_once_and_refuses_bad_signatures(hooks: str) -> None:
    event = {
        "id": "evt_1",
        "type": "payment.succeeded",
        "data": {"object": {"id": "pay_1", "metadata": {"sent_at_us": "1700000000000000"}}},
    }
    body = json.dumps(event).encode()
    good = httpx.post(f"{hooks}/hook/a", content=body, headers=_signed(body, SECRET, "evt_1"))
    again = httpx.post(f"{hooks}/hook/a", content=body, headers=_signed(body, SECRET, "evt_1"))
    other = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="
    forged = httpx.post(f"{hooks}/hook/a", content=body, headers=_signed(body, other, "evt_1"))
    unsigned = httpx.post(f"{hooks}/hook/a", content=body)
    assert (good.status_code, again.status_code) == (200, 200)
    assert (forged.status_code, unsigned.status_code) == (400, 400)
    stats = httpx.get(f"{hooks}/stats").json()
    assert stats["received"] == 1
    assert stats["duplicates"] == 1
    assert stats["bad_signature"] == 2
    received_us, sent_us, kind, path = stats["arrivals"][0]
    assert (sent_us, kind, path) == (1700000000000000, "payment.succeeded", "/hook/a")
    assert received_us > sent_us


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Recorder.seen.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """wrk drops its connections when its time is up: not an error here."""


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by `make bench`")
def test_create_payment_script__unique_keys_and_a_report_line() -> None:
    server = _QuietServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    try:
        result = loadgen.wrk(
            "create_payment.lua",
            f"http://127.0.0.1:{server.server_address[1]}",
            connections=4,
            duration_s=1,
            args=["sk_test_x", "run1", "1", "50"],
        )
    finally:
        server.shutdown()
        server.server_close()
    keys = [key for key, _ in _Recorder.seen]
    assert keys and len(keys) == len(set(keys))
    assert all(key.startswith("bench-run1-") for key in keys)
    body = _Recorder.seen[0][1]
    assert body["payment_method"]["card"]["number"] == "4242424242424242"
    assert int(body["metadata"]["sent_at_us"]) > 1_700_000_000_000_000
    assert result["requests"] >= 1
    assert set(result["latency_us"]) == {"p50", "p90", "p99", "max", "mean"}


def test_rows_from__ledger_postings_are_judged_at_0_3_with_the_service_cpu_per_posting() -> None:
    ledger = {
        "p99_ms": 80.0,
        "ledger_cpu_ms_per_posting": 1.0,
        "postgres_cpu_ms_per_posting": 0.7,
        "posters_cpu_ms_per_posting": 0.8,
    }
    results: dict[str, Any] = {
        "pgbench_c8": {"rps": 1000.0},
        "pgbench_c32": {"rps": 1000.0},
        "ledger_c8": {"rps": 350.0, **ledger},
        "ledger_c32": {"rps": 250.0, **ledger},
    }
    rows = {(r.scenario, r.figure): r for r in rows_from(results)}
    assert rows[("3 ledger postings c8", "throughput")].met is True  # 0.35 >= 0.3
    assert rows[("3 ledger postings c32", "throughput")].met is False  # 0.25 < 0.3
    cpu = rows[("3 ledger postings c8", "ledger CPU / posting")]
    assert (cpu.value, cpu.baseline) == (1.0, "postgres 0.7 ms, gRPC posters 0.8 ms")
    assert rows[("3 ledger postings c32", "p99")].value == 80.0


def test_judge_backlog__growing_in_the_second_half_is_not_bounded() -> None:
    # The ramp of the first half does not count; 20 items/s of growth at 100/s offered does.
    ramp = [(float(t), 10.0 * t) for t in range(6)]
    steady = [(float(t), 50.0 + (t % 2)) for t in range(6, 13)]
    growing = [(float(t), 50.0 + 20.0 * (t - 5)) for t in range(6, 13)]
    held = rates.judge_backlog(ramp + steady, rate=100.0, load_s=12.0)
    grew = rates.judge_backlog(ramp + growing, rate=100.0, load_s=12.0)
    assert (held.bound, held.growth_max_per_s, held.bounded) == (500, 5.0, True)
    assert held.at_end == 50.0 and abs(held.slope_per_s) < 1
    assert (grew.slope_per_s, grew.at_end, grew.bounded) == (20.0, 190.0, False)
    # Samples taken while draining, after the load, are not the load's.
    assert rates.judge_backlog(ramp + steady + [(14.0, 900.0)], rate=100, load_s=12).bounded
    too_big = rates.judge_backlog([(5.0, 600.0), (6.0, 600.0)], rate=100.0, load_s=6.0)
    assert (too_big.slope_per_s, too_big.bounded) == (0.0, False)  # flat but over 5 s of work
    slow = rates.judge_backlog([(2.0, 10.0), (3.0, 12.0), (4.0, 13.0)], rate=10.0, load_s=4.0)
    assert (slow.slope_per_s, slow.growth_max_per_s, slow.bounded) == (1.5, 2.0, True)  # noise


def test_late_share__a_webhook_not_received_yet_counts_as_late() -> None:
    assert rates.late_share([100.0] * 98 + [1500.0], missing=1, limit_ms=1000) == 0.02
    assert rates.late_share([], missing=0, limit_ms=1000) == 0.0


def test_judge_step__creates_backlog_and_latency_each_decide() -> None:
    ok = rates.Backlog(at_end=40.0, bound=500.0, slope_per_s=0.0, growth_max_per_s=5.0)
    growing = rates.Backlog(at_end=40.0, bound=500.0, slope_per_s=6.0, growth_max_per_s=5.0)
    args = {"rate": 100.0, "load_s": 10.0}
    assert rates.judge_step(**args, created=950, backlog=ok, late=0.01).held
    assert not rates.judge_step(**args, created=949, backlog=ok, late=0.0).held
    assert "growing" in rates.judge_step(**args, created=1000, backlog=growing, late=0.0).why
    assert not rates.judge_step(**args, created=1000, backlog=ok, late=0.011).held


def test_next_rate__steps_up_then_bisects_and_stops() -> None:
    def after(steps: list[rates.Step]) -> float | None:
        return rates.next_rate(steps, start=20.0, factor=1.5, bisections=2, cap=100.0)

    def held(rate: float) -> rates.Step:
        return rates.Step(rate, True)

    def missed(rate: float) -> rates.Step:
        return rates.Step(rate, False)

    assert after([]) == 20.0
    assert after([held(20.0)]) == 30.0
    assert after([held(20.0), held(30.0), missed(45.0)]) == 37.5
    steps = [held(20.0), held(30.0), missed(45.0), missed(37.5)]
    assert after(steps) == 33.8  # (30 + 37.5) / 2: the second bisection
    assert after([*steps, held(33.8)]) is None  # bisections spent
    assert rates.highest_held([*steps, held(33.8)]) == 33.8
    assert after([missed(20.0)]) == 10.0  # from zero when nothing held
    assert after([held(80.0), held(100.0)]) is None  # the cap
    assert after([held(80.0)]) == 100.0
    assert rates.highest_held([missed(20.0)]) is None
    # A rate that held above one that did not is noise, not the answer.
    assert rates.highest_held([held(20.0), missed(30.0), held(40.0)]) == 20.0


def test_end_to_end_rows__issue_13_goals() -> None:
    e2e: dict[str, Any] = {
        "rps": 97.0,
        "offered_rate": 100.0,
        "p50_ms": 300.0,
        "p99_ms": 1200.0,
        "backlog_at_end": {"total": 80.0},
        "backlog_bound": 500,
        "backlog_slope_per_s": 1.5,
        "backlog_growth_max_per_s": 5.0,
        "after_drain": {"payments_processing": 0.0, "webhooks_not_received": 2},
        "cpu_ms_per_payment": 14.0,
    }
    search = {"highest_held_rate": 45.0, "steps": [{"rate": 45.0, "held": True}], "elapsed_s": 9}
    rows = {(r.scenario, r.figure): r for r in end_to_end_rows(e2e, search)}
    assert rows[("4 end to end", "payments/s sustained")].met is True  # 0.97 >= 0.95
    assert rows[("4 end to end", "backlog at end of load")].met is True
    assert rows[("4 end to end", "backlog trend, 2nd half")].met is True
    assert rows[("4 end to end", "create->webhook p99")].met is False  # 1,200 > 1,000 ms
    assert rows[("4 end to end", "CPU / payment, all processes")].met is True  # 14 <= 15
    assert rows[("4 highest rate held", "payments/s offered")].value == 45.0
    empty = end_to_end_rows({}, {})
    assert all(row.met is None for row in empty)


def test_ms_per__milliseconds_of_cpu_per_item_and_none_for_no_items() -> None:
    assert resources.ms_per(1.5, 1000) == 1.5
    assert resources.ms_per(1.0, 3, digits=2) == 333.33
    assert resources.ms_per(2.0, 0) is None
