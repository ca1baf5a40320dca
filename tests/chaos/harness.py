"""The fault harness: a mixed workload on a platform of its own while faults are injected.

`run_chaos` drives payments with every test card (some captured by hand, some partly refunded)
and webhook endpoints that succeed, fail, time out or answer 410, while a fault thread SIGKILLs
paymesh processes (restarting them), kills Redis (restarted empty: its queues are lost) and
stops PostgreSQL (then starts it again). Meanwhile a network fault thread works the fault
proxies (`tests/chaos/proxy.py`) that stand between every paymesh process and PostgreSQL, between
every paymesh process and Redis (`proxied_backends`), and between the webhook worker and the
receivers: latency bursts, resets (every live connection RST, new ones refused for a moment) and
stalls (nothing forwarded, nothing closed). Every client request carries an Idempotency-Key and is
repeated with the same key through 5xx answers and broken connections, as a careful merchant
would. A supervisor thread restarts any process that exits on its own (as Kubernetes would;
the workers exit when Redis goes away) and the report names them. After the faults it drains
(replaying, as an operator would, deliveries to the healthy endpoint that network faults
dead-lettered) and checks what `docs/reliability.md` promises; `Report` says what was injected
and counted.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from paymesh.payment.v1 import payment_internal_pb2, payment_internal_pb2_grpc

from services.payment.processor import DISPUTE_SCENARIOS, SCENARIOS
from services.runtime import embedded
from services.runtime.platform import LocalPlatform, processes
from tests.chaos.proxy import FaultProxy
from tests.integration.webhook_receiver import Receiver, Reply

CARDS = ["4242424242424242", "5555555555554444", *SCENARIOS]
# Cards that are paid and then disputed: the flow answers the dispute instead of refunding.
DISPUTE_CARDS = {card for card, scenario in SCENARIOS.items() if scenario in DISPUTE_SCENARIOS}
DISPUTE_CLOSED = {"won", "lost", "warning_closed"}
FINAL = {"succeeded", "failed", "canceled"}
DELIVERY_FINAL = {"delivered", "dead"}
# Processes the fault thread may SIGKILL: every paymesh process (not the edge or the web apps).
NOT_KILLED = {"envoy", "webapps", "demo-shop"}
# Webhook receivers: path -> how it answers every request, and the events it subscribes to.
# The failing and slow ones take a few event types only: each of their attempts occupies the
# one delivery worker (a slow one for the whole timeout), and the drain must end in minutes.
ENDPOINTS = {
    "/ok": (Reply(200), ["*"]),
    "/fail": (Reply(500, b"down"), ["payment.failed"]),
    "/slow": (Reply(200, delay_s=3.0), ["payment.requires_capture"]),
    "/gone": (Reply(410, b"gone"), ["*"]),
}


def platform_variables() -> dict[str, str]:
    """Settings that make recovery quick enough to drain within a test's patience."""
    return {
        "PAYMESH_AUTH_CACHE_TTL_S": "1",
        "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "PAYMESH_WEBHOOK_RETRY_SCHEDULE": "1,1",
        "PAYMESH_WEBHOOK_TIMEOUT_S": "1",
        "PAYMESH_WEBHOOK_LEASE_MARGIN_S": "2",
        "PAYMESH_WEBHOOK_SWEEP_INTERVAL_S": "0.5",
        "PAYMESH_PAYMENT_SWEEP_INTERVAL_S": "0.5",
        "PAYMESH_PAYMENT_STUCK_AFTER_S": "4",
        "PAYMESH_PAYMENT_OUTBOX_RETRY_DELAY_MAX_S": "2",
        "PAYMESH_IDEMPOTENCY_LOCK_TIMEOUT_S": "10",
    }


# Network faults (on the proxies): their size and duration, drawn per fault.
LATENCY_DELAY_MS = (20.0, 150.0)
LATENCY_JITTER_MS = (0.0, 50.0)
LATENCY_DURATION_S = (2.0, 6.0)
RESET_REFUSE_S = (0.0, 2.0)
STALL_DURATION_S = (1.0, 5.0)
NETWORK_FAULT_PAUSE_S = (1.0, 4.0)


@dataclass
class Backends:
    """PostgreSQL and Redis, each behind a fault proxy that every paymesh process goes through."""

    data_dir: Path
    postgres_port: int  # the server's own port; the platform only knows the proxy's
    postgres_password: str = field(repr=False)
    redis_port: int
    postgres_proxy: FaultProxy
    redis_proxy: FaultProxy
    database_url: str  # through the proxy
    redis_url: str  # through the proxy

    def variables(self) -> dict[str, str]:
        """The platform's settings that route it through the proxies."""
        return {"PAYMESH_DATABASE_URL": self.database_url, "PAYMESH_REDIS_URL": self.redis_url}

    @property
    def direct_redis_url(self) -> str:
        """Redis itself, bypassing its proxy (for the harness's own flush)."""
        return f"redis://{embedded.LOCALHOST}:{self.redis_port}/0"


@contextmanager
def proxied_backends(data_dir: Path, *, seed: int) -> Iterator[Backends]:
    """Starts embedded PostgreSQL and Redis in `data_dir`, each behind a fault proxy."""
    postgres = embedded.start_postgres(data_dir / "pg", password=secrets.token_urlsafe(16))
    redis_server = embedded.start_redis(data_dir / "redis")
    postgres_proxy = FaultProxy(
        embedded.LOCALHOST, postgres.port, name="postgres", rng=random.Random(f"{seed}-pg")
    )
    redis_proxy = FaultProxy(
        embedded.LOCALHOST, redis_server.port, name="redis", rng=random.Random(f"{seed}-redis")
    )
    try:
        with postgres_proxy.running(), redis_proxy.running():
            yield Backends(
                data_dir=data_dir,
                postgres_port=postgres.port,
                postgres_password=postgres.password,
                redis_port=redis_server.port,
                postgres_proxy=postgres_proxy,
                redis_proxy=redis_proxy,
                database_url=postgres.url().replace(
                    f":{postgres.port}/", f":{postgres_proxy.port}/"
                ),
                redis_url=f"redis://{embedded.LOCALHOST}:{redis_proxy.port}/0",
            )
    finally:
        embedded.stop_redis(data_dir / "redis")
        embedded.stop_postgres(data_dir / "pg")


@dataclass
class Report:
    """What the run injected and what it checked."""

    seed: int
    faults: list[str] = field(default_factory=list)
    restarted_after_crash: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    proxies: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def injected(self, fault: str) -> None:
        """Records a fault, stamped with the time since the run began (two threads inject)."""
        with self._lock:
            self.faults.append(f"t+{time.monotonic() - self.started:5.1f}s {fault}")

    def render(self) -> str:
        """A human-readable summary."""
        lines = [f"chaos run, seed {self.seed}", f"faults injected ({len(self.faults)}):"]
        lines.extend(f"  - {fault}" for fault in self.faults)
        if self.restarted_after_crash:
            lines.append(
                "processes that exited on their own, restarted by the harness's supervisor: "
                f"{self.restarted_after_crash}"
            )
        lines.append("fault proxies:")
        lines.extend(f"  {name}: {stats}" for name, stats in self.proxies.items())
        lines.append("checked:")
        lines.extend(f"  {name}: {count}" for name, count in sorted(self.counts.items()))
        return "\n".join(lines)


class Client:
    """Calls the edge like a careful merchant: same Idempotency-Key until a non-5xx answer."""

    def __init__(self, base_url: str, key: str, *, patience_s: float) -> None:
        self._base_url = base_url
        self._key = key
        self._patience_s = patience_s
        self.outcomes: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()

    def call(
        self, verb: str, path: str, body: dict[str, Any] | None = None, *, key: str | None = None
    ) -> httpx.Response:
        """The first answer that is not a 5xx or a broken connection, within the patience."""
        headers = {"X-API-Key": self._key}
        if key is not None:
            headers["Idempotency-Key"] = key
        deadline = time.monotonic() + self._patience_s
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            while True:
                try:
                    response = client.request(verb, path, json=body, headers=headers)
                    if response.status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{verb} {path} failed for {self._patience_s}s")
                time.sleep(0.5)
        if key is not None and response.status_code == 200:
            with self._lock:
                self.outcomes[key].add(response.json()["id"])
        return response

    def wait(self, path: str, statuses: set[str], *, timeout_s: float) -> dict[str, Any]:
        """Polls an object until its status is one of `statuses`."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.call("GET", path)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in statuses:
                return body
            assert time.monotonic() < deadline, f"{path} still {body['status']}"
            time.sleep(0.3)


class FaultInjector:
    """Injects `count` faults, chosen and paced by a seeded random generator."""

    def __init__(
        self,
        platform: LocalPlatform,
        backends: Backends,
        proxies: dict[str, FaultProxy],
        *,
        rng: random.Random,
        seed: int,
        report: Report,
    ) -> None:
        self._platform = platform
        self._backends = backends
        self._proxies = proxies
        self._rng = rng
        # Its own generator: the network thread's draws do not shift the process faults'.
        self._network_rng = random.Random(f"{seed}-network")
        self._report = report
        self._victims = sorted(set(processes(platform.settings)) - NOT_KILLED)
        # Held while a fault is in progress, so the supervisor does not restart its victim.
        self.lock = threading.Lock()

    def run(self, count: int, stop: threading.Event) -> None:
        """Injects faults until `count` are done or `stop` is set."""
        kinds: list[Callable[[], str]] = [
            self.kill,
            self.kill,
            self.kill,
            self.redis,
            self.postgres,
        ]
        for _ in range(count):
            # Spread over the workload rather than bunched at its start.
            if stop.wait(self._rng.uniform(3.0, 12.0)):
                return
            with self.lock:
                self._report.injected(self._rng.choice(kinds)())

    def run_network(self, count: int, stop: threading.Event) -> None:
        """Injects `count` proxy faults, each on a proxy and of a kind the seed picks."""
        rng = self._network_rng
        kinds: list[Callable[[FaultProxy], tuple[str, float]]] = [
            self.latency,
            self.reset,
            self.stall,
        ]
        for _ in range(count):
            if stop.wait(rng.uniform(*NETWORK_FAULT_PAUSE_S)):
                return
            name = rng.choice(sorted(self._proxies))
            description, duration_s = rng.choice(kinds)(self._proxies[name])
            self._report.injected(f"proxy {name}: {description}")
            # One network fault at a time, so the report says what each one was.
            if stop.wait(duration_s):
                return

    def latency(self, proxy: FaultProxy) -> tuple[str, float]:
        """Delays every chunk through `proxy` for a few seconds."""
        rng = self._network_rng
        delay_ms, jitter_ms = rng.uniform(*LATENCY_DELAY_MS), rng.uniform(*LATENCY_JITTER_MS)
        duration_s = rng.uniform(*LATENCY_DURATION_S)
        proxy.latency(delay_ms=delay_ms, jitter_ms=jitter_ms, duration_s=duration_s)
        described = f"latency {delay_ms:.0f} ms + up to {jitter_ms:.0f} ms per chunk"
        return f"{described} for {duration_s:.1f} s", duration_s

    def reset(self, proxy: FaultProxy) -> tuple[str, float]:
        """RSTs every connection through `proxy` and refuses new ones for a moment."""
        refuse_s = self._network_rng.uniform(*RESET_REFUSE_S)
        cut = proxy.reset(refuse_s=refuse_s)
        return f"reset {cut} live connections, new ones refused for {refuse_s:.1f} s", refuse_s

    def stall(self, proxy: FaultProxy) -> tuple[str, float]:
        """Forwards nothing through `proxy` for a few seconds, closing nothing."""
        duration_s = self._network_rng.uniform(*STALL_DURATION_S)
        proxy.stall(duration_s=duration_s)
        return f"stall {duration_s:.1f} s", duration_s

    def supervise(self, stop: threading.Event) -> None:
        """Restarts any process that exited on its own, as Kubernetes or systemd would."""
        while not stop.wait(1.0):
            with self.lock:
                _restart_dead(self._platform, self._report)

    def kill(self) -> str:
        """SIGKILLs one paymesh process and starts it again."""
        name = self._rng.choice(self._victims)
        self._platform.kill(name)
        time.sleep(self._rng.uniform(0.0, 1.5))
        self._platform.start_process(name)
        return f"SIGKILL {name}, restarted"

    def redis(self) -> str:
        """Stops Redis, starts it again and empties it: every queued job is lost."""
        directory = self._backends.data_dir / "redis"
        embedded.stop_redis(directory)
        time.sleep(self._rng.uniform(0.5, 2.0))
        embedded.start_redis(directory, port=self._backends.redis_port)
        with redis.Redis.from_url(self._backends.direct_redis_url) as connection:
            connection.flushall()
        return "Redis stopped, restarted and flushed (queues lost)"

    def postgres(self) -> str:
        """Stops PostgreSQL (fast shutdown: connections are cut) and starts it again."""
        directory = self._backends.data_dir / "pg"
        embedded.stop_postgres(directory)
        time.sleep(self._rng.uniform(0.5, 2.0))
        embedded.start_postgres(
            directory,
            password=self._backends.postgres_password,
            port=self._backends.postgres_port,
        )
        return "PostgreSQL stopped and restarted"


@dataclass
class Flow:
    """One payment of the workload and what was done to it."""

    card: str
    manual: bool
    refund: bool
    key: str
    body: dict[str, Any] = field(default_factory=dict)
    payment_id: str = ""
    refund_ids: list[str] = field(default_factory=list)
    dispute_id: str = ""


def _drive(client: Client, flow: Flow, *, timeout_s: float) -> None:
    flow.body = {
        "amount": 2000,
        "currency": "USD",
        "capture_method": "manual" if flow.manual else "automatic",
        "payment_method": {
            "card": {"number": flow.card, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        },
    }
    created = client.call("POST", "/v1/payments", flow.body, key=flow.key)
    assert created.status_code == 200, created.text
    flow.payment_id = created.json()["id"]
    path = f"/v1/payments/{flow.payment_id}"
    settled = client.wait(
        path, FINAL | {"requires_capture", "requires_action"}, timeout_s=timeout_s
    )
    if settled["status"] == "requires_action":
        # A 3-D Secure card: the customer completes the challenge, under faults like the rest.
        authenticated = client.call(
            "POST", f"{path}/authenticate", {"result": "complete"}, key=f"{flow.key}-authenticate"
        )
        assert authenticated.status_code == 200, authenticated.text
        settled = client.wait(path, FINAL | {"requires_capture"}, timeout_s=timeout_s)
    if settled["status"] == "requires_capture":
        captured = client.call(
            "POST", f"{path}/capture", {"amount_to_capture": "1500"}, key=f"{flow.key}-capture"
        )
        assert captured.status_code == 200, captured.text
        settled = client.wait(path, FINAL, timeout_s=timeout_s)
    if flow.card in DISPUTE_CARDS and settled["status"] == "succeeded":
        _answer_dispute(client, flow, timeout_s=timeout_s)
    elif flow.refund and settled["status"] == "succeeded":
        refund = client.call(
            "POST",
            "/v1/refunds",
            {"payment_id": flow.payment_id, "amount": 500},
            key=f"{flow.key}-refund",
        )
        assert refund.status_code == 200, refund.text
        flow.refund_ids.append(refund.json()["id"])
        client.wait(
            f"/v1/refunds/{refund.json()['id']}", {"succeeded", "failed"}, timeout_s=timeout_s
        )


def _answer_dispute(client: Client, flow: Flow, *, timeout_s: float) -> None:
    """Waits for the payment's dispute, submits evidence (winning for some), waits for the end."""
    deadline = time.monotonic() + timeout_s
    while not flow.dispute_id:
        listed = client.call("GET", f"/v1/disputes?payment_id={flow.payment_id}")
        assert listed.status_code == 200, listed.text
        found = listed.json().get("disputes", [])
        if found:
            flow.dispute_id = found[0]["id"]
            break
        assert time.monotonic() < deadline, f"{flow.payment_id} was never disputed"
        time.sleep(0.3)
    evidence = "winning_evidence" if flow.refund else "losing_evidence"
    submitted = client.call(
        "POST",
        f"/v1/disputes/{flow.dispute_id}",
        {"evidence": {"uncategorized_text": evidence}, "submit": True},
        key=f"{flow.key}-dispute",
    )
    assert submitted.status_code == 200, submitted.text
    client.wait(f"/v1/disputes/{flow.dispute_id}", DISPUTE_CLOSED, timeout_s=timeout_s)


PAYOUT_AMOUNT = 100


def _drive_payouts(
    client: Client, seed: int, count: int, payouts: list[str], *, timeout_s: float
) -> None:
    """Pays out `count` times from the available balance while the payments and faults run."""
    for index in range(count):
        deadline = time.monotonic() + timeout_s
        while True:
            balance = client.call("GET", "/v1/balance").json().get("available", [])
            usd = [b for b in balance if b["currency"] == "USD"]
            if usd and usd[0]["available"] >= PAYOUT_AMOUNT:
                break
            assert time.monotonic() < deadline, f"no {PAYOUT_AMOUNT} USD became available"
            time.sleep(0.5)
        made = client.call(
            "POST",
            "/v1/payouts",
            {"amount": PAYOUT_AMOUNT, "currency": "USD"},
            key=f"chaos-{seed}-payout-{index}",
        )
        assert made.status_code == 200, made.text
        payouts.append(made.json()["id"])
        client.wait(f"/v1/payouts/{made.json()['id']}", {"paid", "failed"}, timeout_s=timeout_s)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _pages(client: Client, path: str, field_name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        separator = "&" if "?" in path else "?"
        response = client.call("GET", f"{path}{separator}page_size=100&page_token={token}")
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body.get(field_name, []))
        token = body.get("next_page_token", "")
        if not token:
            return items


def _restart_dead(platform: LocalPlatform, report: Report) -> None:
    for name, child in list(platform.children.items()):
        if child.poll() is not None:
            report.restarted_after_crash.append(name)
            platform.start_process(name)


def run_chaos(
    platform: LocalPlatform,
    backends: Backends,
    key: str,
    *,
    seed: int,
    payments: int,
    faults: int,
    network_faults: int,
    drain_timeout_s: float,
) -> Report:
    """Runs the workload under faults, drains, checks every guarantee; returns the report."""
    rng = random.Random(seed)
    report = Report(seed=seed)
    started = datetime.now(UTC)
    client = Client(platform.base_url, key, patience_s=drain_timeout_s)
    receiver = Receiver()
    # The receivers are reached only through this proxy: the endpoints' URLs name its port.
    webhook_proxy = FaultProxy(
        embedded.LOCALHOST, receiver.port, name="webhooks", rng=random.Random(f"{seed}-webhooks")
    )
    proxies = {
        "postgres": backends.postgres_proxy,
        "redis": backends.redis_proxy,
        "webhooks": webhook_proxy,
    }
    with receiver.running(), webhook_proxy.running():
        for path, (reply, _) in ENDPOINTS.items():
            receiver.script(path, then=reply)
        base = f"http://{embedded.LOCALHOST}:{webhook_proxy.port}"
        endpoints = {
            path: client.call(
                "POST",
                "/v1/webhook_endpoints",
                {"url": f"{base}{path}", "enabled_events": types},
                key=f"endpoint-{path}-{seed}",
            ).json()["id"]
            for path, (_, types) in ENDPOINTS.items()
        }
        flows = [
            Flow(
                card=CARDS[index % len(CARDS)],
                # The first is an approved card held for capture, so the slow endpoint has work.
                manual=index == 0 or rng.random() < 0.3,
                refund=rng.random() < 0.4,
                key=f"chaos-{seed}-{index}-{secrets.token_hex(4)}",
            )
            for index in range(payments)
        ]
        # Payouts run beside the payments: funds become available at once, to a paying account.
        settings = client.call(
            "POST",
            "/v1/account/payout_settings",
            {"bank_account_number": "000123456789", "settlement_delay_s": 0},
        )
        assert settings.status_code == 200, settings.text
        payouts: list[str] = []
        stop = threading.Event()
        injector = FaultInjector(platform, backends, proxies, rng=rng, seed=seed, report=report)
        fault_thread = threading.Thread(target=injector.run, args=(faults, stop), daemon=True)
        fault_thread.start()
        network_thread = threading.Thread(
            target=injector.run_network, args=(network_faults, stop), daemon=True
        )
        network_thread.start()
        supervisor = threading.Thread(target=injector.supervise, args=(stop,), daemon=True)
        supervisor.start()
        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                for done in [
                    pool.submit(_drive, client, flow, timeout_s=drain_timeout_s) for flow in flows
                ] + [
                    pool.submit(_drive_payouts, client, seed, 3, payouts, timeout_s=drain_timeout_s)
                ]:
                    done.result()
            fault_thread.join(timeout=drain_timeout_s)
            network_thread.join(timeout=drain_timeout_s)
        finally:
            stop.set()
            fault_thread.join(timeout=60)
            network_thread.join(timeout=60)
            supervisor.join(timeout=60)
            for proxy in proxies.values():
                proxy.clear()
        try:
            _restart_dead(platform, report)
            platform.wait_healthy(timeout_s=drain_timeout_s)
            _check_payments(platform, client, flows, started, report, payouts=payouts)
            _check_ledger(platform, started, report)
            _check_webhooks(
                platform,
                client,
                endpoints,
                started=started,
                timeout_s=drain_timeout_s,
                report=report,
            )
            _check_idempotency(client, flows, report)
            _check_proxies(proxies, report)
        except BaseException:
            # What was injected is what a failing run most needs to show.
            print(f"\nFAILED after these faults:\n{report.render()}")
            raise
    return report


def _check_payments(
    platform: LocalPlatform,
    client: Client,
    flows: list[Flow],
    started: datetime,
    report: Report,
    *,
    payouts: list[str],
) -> None:
    statuses = {
        flow.payment_id: client.call("GET", f"/v1/payments/{flow.payment_id}").json()["status"]
        for flow in flows
    }
    assert set(statuses.values()) <= FINAL, Counter(statuses.values())
    report.counts.update(f"payments {status}" for status in statuses.values())
    captures: Counter[str] = Counter()
    refunds: Counter[str] = Counter()
    disputes: Counter[tuple[str, str]] = Counter()
    transfers: Counter[str] = Counter()
    with grpc.insecure_channel(platform.settings.target("payment")) as channel:
        stub = payment_internal_pb2_grpc.PaymentInternalServiceStub(channel)
        token = ""
        while True:
            reply = stub.ListProcessorRecords(
                payment_internal_pb2.ListProcessorRecordsRequest(
                    start_time=_timestamp(started - timedelta(minutes=5)),
                    end_time=_timestamp(datetime.now(UTC) + timedelta(minutes=5)),
                    page_size=100,
                    page_token=token,
                ),
                timeout=60,
            )
            for record in reply.records:
                if record.kind == "capture":
                    captures[record.payment_id] += 1
                elif record.kind == "refund":
                    refunds[record.refund_id] += 1
                elif record.kind.startswith("payout_"):
                    # The bank's transfer for a payout (its id in payment_id).
                    transfers[record.payment_id] += 1
                else:
                    # A chargeback's withdrawal and its reinstatement: at most one each.
                    disputes[(record.kind, record.payment_id)] += 1
            token = reply.next_page_token
            if not token:
                break
    for payment_id, status in statuses.items():
        expected = 1 if status == "succeeded" else 0
        assert captures[payment_id] == expected, (payment_id, status, captures[payment_id])
    assert all(count == 1 for count in refunds.values()), refunds
    assert all(count == 1 for count in disputes.values()), disputes
    report.counts["processor captures (exactly one per succeeded payment)"] = sum(captures.values())
    report.counts["processor refunds (at most one per refund)"] = sum(refunds.values())
    report.counts["processor dispute movements (at most one of each per payment)"] = sum(
        disputes.values()
    )
    payout_statuses = {
        payout_id: client.call("GET", f"/v1/payouts/{payout_id}").json()["status"]
        for payout_id in payouts
    }
    assert set(payout_statuses.values()) <= {"paid", "failed"}, payout_statuses
    for payout_id in payouts:
        assert transfers[payout_id] == 1, (payout_id, transfers[payout_id])
    report.counts["bank transfers (exactly one per payout)"] = sum(transfers.values())


def _check_ledger(platform: LocalPlatform, started: datetime, report: Report) -> None:
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        balance = stub.GetTrialBalance(ledger_internal_pb2.GetTrialBalanceRequest(), timeout=60)
        assert balance.balanced, balance
        for totals in balance.currencies:
            assert totals.debits == totals.credits, totals
        reconciliation = stub.Reconcile(
            ledger_internal_pb2.ReconcileRequest(
                start_time=_timestamp(started - timedelta(minutes=1)),
                end_time=_timestamp(datetime.now(UTC)),
            ),
            timeout=120,
        )
    assert list(reconciliation.mismatches) == [], reconciliation.mismatches
    report.counts["reconciliation movements checked (0 mismatches)"] = reconciliation.checked_count
    report.counts["trial balance currencies (balanced)"] = len(balance.currencies)


def _deliveries_final(client: Client, endpoint_id: str) -> list[dict[str, Any]] | None:
    listed = _pages(client, f"/v1/webhook_endpoints/{endpoint_id}/deliveries", "deliveries")
    return listed if all(item["status"] in DELIVERY_FINAL for item in listed) else None


def _replay_dead(client: Client, endpoint_id: str, started: datetime) -> int:
    """Replays an endpoint's dead-lettered deliveries since `started`; returns how many."""
    response = client.call(
        "POST",
        f"/v1/webhook_endpoints/{endpoint_id}/replay",
        {"since": started.isoformat().replace("+00:00", "Z"), "limit": 1000},
    )
    assert response.status_code == 200, response.text
    return len(response.json().get("delivery_ids", []))


def _check_webhooks(
    platform: LocalPlatform,
    client: Client,
    endpoints: dict[str, str],
    *,
    started: datetime,
    timeout_s: float,
    report: Report,
) -> None:
    deadline = time.monotonic() + timeout_s
    replayed = 0
    while True:
        listed_events = _pages(client, "/v1/events", "events")
        events = {event["id"] for event in listed_events}
        per_endpoint = {path: _deliveries_final(client, eid) for path, eid in endpoints.items()}
        ok = per_endpoint["/ok"] or []
        reached = {d["event_id"] for d in ok if d["status"] == "delivered"}
        if all(listed is not None for listed in per_endpoint.values()):
            if reached >= events:
                break
            if any(d["status"] == "dead" for d in ok):
                # Resets and stalls on the receivers' proxy can use up a healthy endpoint's
                # retries: its deliveries are dead-lettered, and replayed as an operator would
                # once the outage is over. They must then arrive.
                replayed += _replay_dead(client, endpoints["/ok"], started)
        if time.monotonic() > deadline:
            now_listed = {
                path: _pages(client, f"/v1/webhook_endpoints/{eid}/deliveries", "deliveries")
                for path, eid in endpoints.items()
            }
            pending = {
                path: sorted(
                    f"{d['id']} {d['status']}" for d in items if d["status"] not in DELIVERY_FINAL
                )
                for path, items in now_listed.items()
            }
            at_ok = {d["event_id"] for d in now_listed["/ok"] if d["status"] == "delivered"}
            exited = sorted(
                name for name, child in platform.children.items() if child.poll() is not None
            )
            raise AssertionError(
                f"webhook deliveries did not drain: not final {pending}; "
                f"{len(events - at_ok)} of {len(events)} events not delivered to /ok; "
                f"exited processes {exited}"
            )
        time.sleep(1.0)
    report.counts["events"] = len(events)
    report.counts["deliveries to /ok: dead-lettered by faults, replayed, then delivered"] = replayed
    for path, listed in per_endpoint.items():
        assert listed is not None
        types = ENDPOINTS[path][1]
        subscribed = {e["id"] for e in listed_events if types == ["*"] or e["type"] in types}
        delivered = {d["event_id"] for d in listed if d["status"] == "delivered"}
        dead = {d["event_id"] for d in listed if d["status"] == "dead"}
        report.counts[f"deliveries to {path}: delivered"] = len(delivered)
        report.counts[f"deliveries to {path}: dead-lettered"] = len(dead)
        if path == "/gone":
            # 410 disables the endpoint: what it had is dead-lettered, nothing newer is sent.
            endpoint = client.call("GET", f"/v1/webhook_endpoints/{endpoints[path]}").json()
            assert not endpoint.get("enabled", False), endpoint  # proto3 JSON omits false
            assert listed and not delivered, listed
            continue
        assert subscribed, path  # the workload made events of every subscribed kind
        assert delivered | dead >= subscribed, (path, sorted(subscribed - delivered - dead)[:5])


def _check_proxies(proxies: dict[str, FaultProxy], report: Report) -> None:
    # Every proxy carried traffic: the platform and the receivers were reached only through them.
    for name, proxy in proxies.items():
        stats = proxy.stats()
        assert stats.connections > 0 and stats.bytes > 0, (name, stats)
        report.proxies[name] = (
            f"{stats.connections} connections, {stats.bytes} bytes in {stats.chunks} chunks; "
            f"{stats.delayed_chunks} chunks delayed, {stats.held_chunks} held by a stall, "
            f"{stats.reset_connections} connections reset, {stats.refused} refused"
        )


def _check_idempotency(client: Client, flows: list[Flow], report: Report) -> None:
    # Each create once more with its key: the stored outcome comes back, not a new payment.
    for flow in flows:
        again = client.call("POST", "/v1/payments", flow.body, key=flow.key)
        assert again.status_code == 200, again.text
    doubled = {key: ids for key, ids in client.outcomes.items() if len(ids) > 1}
    assert not doubled, doubled
    report.counts["idempotency keys (one outcome each)"] = len(client.outcomes)
