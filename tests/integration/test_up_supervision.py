"""`paymesh up` under a crash drill: SIGKILL of each process kind during a burst of payments.

Every payment must still reach its final state and every webhook its endpoint, with nobody
restarting anything by hand, and nothing a killed process forked may live on.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from services.runtime.platform import free_port_settings
from tests.integration.test_payments import card
from tests.integration.test_up import _kill_tree, _read_banner, _start_up, _stop
from tests.integration.webhook_receiver import Receiver, create_endpoint, wait_until

# One of each kind `paymesh up` runs, found by the module it runs.
KILLED = {
    "payment-worker": "services.payment.worker",
    "webhook-worker": "services.webhook.worker",
    "payment-relay": "services.payment.relay",
    "webhook-sweeper": "services.webhook.sweeper",
    "payment": "services.payment.server",
    "ledger": "services.ledger.server",
    "webhook": "services.webhook.server",
    "admin": "services.admin.server",
}
# Short re-drive and lease times, so work a killed process held is retried within seconds.
FAST_RECOVERY = {
    "PAYMESH_PAYMENT_STUCK_AFTER_S": "4",
    "PAYMESH_PAYMENT_SWEEP_INTERVAL_S": "1",
    "PAYMESH_PAYMENT_OUTBOX_RETRY_DELAY_MAX_S": "2",
    "PAYMESH_WEBHOOK_TIMEOUT_S": "2",
    "PAYMESH_WEBHOOK_LEASE_MARGIN_S": "1",
}
PAYMENTS = 40
BURST_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 90.0


def _process_of(root: psutil.Process, module: str) -> psutil.Process | None:
    """The (non-shell) process under `root` that runs `python -m module`."""
    for proc in root.children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        if module in cmdline and "-m" in cmdline and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    return None


def _pay(client: httpx.Client, key: str, number: int, *, deadline_s: float) -> str:
    """Creates one card payment, retrying (same idempotency key) while its service restarts."""
    while True:
        try:
            response = client.post(
                "/v1/payments",
                headers={"X-API-Key": key, "Idempotency-Key": f"drill-{number}"},
                json={
                    "amount": 1000 + number,
                    "currency": "USD",
                    "payment_method": {"card": card()},
                },
            )
            if response.status_code == 200:
                payment_id: str = response.json()["id"]
                return payment_id
            assert response.status_code >= 500 or response.status_code == 409, response.text
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline_s, f"payment {number} could not be created"
        time.sleep(0.2)


def _statuses(client: httpx.Client, key: str, ids: list[str]) -> dict[str, str]:
    statuses = {}
    for payment_id in ids:
        response = client.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": key})
        statuses[payment_id] = response.json()["status"] if response.status_code == 200 else "?"
    return statuses


def test_up__sigkill_of_each_process_kind_under_load__processing_resumes(tmp_path: Path) -> None:
    process = _start_up(tmp_path / "paymesh", {**free_port_settings(), **FAST_RECOVERY})
    try:
        banner = _read_banner(process)
        key = banner["secret_key"]
        base_url = banner["url"].removesuffix("/v1/payments")
        with (
            Receiver().running() as receiver,
            httpx.Client(base_url=base_url, timeout=30) as client,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            create_endpoint(client, key, receiver.url("/drill"), ["payment.succeeded"])
            root = psutil.Process(process.pid)
            victims = {kind: _process_of(root, module) for kind, module in KILLED.items()}
            assert all(victims.values()), victims
            # What the workers forked (RQ's scheduler) must end with them.
            forked = [
                child
                for kind in ("payment-worker", "webhook-worker")
                for child in victims[kind].children(recursive=True)  # type: ignore[union-attr]
            ]
            assert forked, "each RQ worker should have forked its scheduler"

            deadline_s = time.monotonic() + BURST_TIMEOUT_S
            burst = [
                pool.submit(_pay, client, key, number, deadline_s=deadline_s)
                for number in range(PAYMENTS)
            ]
            wait_until(lambda: sum(f.done() for f in burst) >= PAYMENTS // 4, timeout_s=30)
            for victim in victims.values():
                victim.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            ids = [future.result() for future in burst]

            def restarted() -> bool:
                now = {kind: _process_of(root, module) for kind, module in KILLED.items()}
                return all(now[kind] not in (None, victims[kind]) for kind in KILLED)

            wait_until(restarted, timeout_s=30)
            psutil.wait_procs(forked, timeout=10)
            assert not [p for p in forked if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

            def settled() -> dict[str, str] | None:
                statuses = _statuses(client, key, ids)
                return statuses if set(statuses.values()) == {"succeeded"} else None

            try:
                wait_until(settled, timeout_s=SETTLE_TIMEOUT_S)
            except AssertionError:
                raise AssertionError(_statuses(client, key, ids)) from None

            def delivered() -> set[str] | None:
                seen = {
                    json.loads(r.body)["data"]["object"]["id"] for r in receiver.received("/drill")
                }
                return seen if seen >= set(ids) else None

            wait_until(delivered, timeout_s=SETTLE_TIMEOUT_S)
        assert process.poll() is None, "paymesh up must keep running"
        _stop(process)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            _kill_tree(process)
