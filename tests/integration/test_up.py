"""`paymesh up` end to end: it comes up, its curl example works, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from services.common.ports import ephemeral_port_range
from services.runtime.platform import free_port_settings

BANNER_TIMEOUT_S = 180


def _start_up(data_dir: Path, ports: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **ports, "PAYMESH_DATA_DIR": str(data_dir)}
    for name in ("PAYMESH_DATABASE_URL", "PAYMESH_REDIS_URL", "PAYMESH_PUBLIC_BASE_URL"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "services.runtime.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _read_banner(process: subprocess.Popen[str]) -> dict[str, str]:
    """Reads output until the banner's last line, within a deadline; returns what it printed."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # readline() blocks while paymesh up is silent: a thread reads (to the end, so the
        # children never block on a full pipe) and the test keeps time.
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + BANNER_TIMEOUT_S
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if "Ctrl-C stops every process" in line:
            text = "".join(seen)
            secret = re.search(r"secret key\s+(sk_test_\w+)", text)
            curl = re.search(r"curl -s (\S+)", text)
            assert secret and curl, text
            return {"secret_key": secret.group(1), "url": curl.group(1), "text": text}
    pytest.fail("paymesh up printed no banner in time:\n" + "".join(seen[-40:]))


def _stop(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """Sends Ctrl-C (SIGINT) and returns what was running under it just before."""
    tree: list[psutil.Process] = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return tree


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """Last-resort cleanup of a failed run: the supervisor's children live in their own groups."""
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for proc in [*tree, psutil.Process(process.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    process.wait(timeout=30)


def _embedded_pids(data_dir: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline and proc.info["pid"] != os.getpid():
            found.append(proc.info["pid"])
    return found


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_up_refuses_a_port_in_the_kernels_ephemeral_range(tmp_path: Path) -> None:
    low, _ = ephemeral_port_range()
    ports = {**free_port_settings(), "PAYMESH_ADMIN_GRPC_PORT": str(low)}
    process = _start_up(tmp_path / "paymesh", ports)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert f"PAYMESH_ADMIN_GRPC_PORT={low}: inside the kernel's ephemeral port range" in output
    assert not (tmp_path / "paymesh").exists()  # refused before anything started


def test_up_serves_its_curl_example_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "paymesh"
    ports = free_port_settings()
    process = _start_up(data_dir, ports)
    try:
        banner = _read_banner(process)
        response = httpx.post(
            banner["url"],
            headers={"X-API-Key": banner["secret_key"], "Idempotency-Key": "up-test-1"},
            json={"amount": 100, "currency": "INR"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"].startswith("pay_")
        # The demo merchant user the banner prints signs in and sees that payment.
        login = re.search(r"merchant login\s+(\S+) / (\S+)", banner["text"])
        assert login, banner["text"]
        base = banner["url"].removesuffix("/v1/payments")
        session = httpx.post(
            f"{base}/v1/account/sessions",
            json={"email": login.group(1), "password": login.group(2)},
            timeout=30,
        )
        assert session.status_code == 200, session.text
        listed = httpx.get(
            f"{base}/v1/payments",
            headers={"Authorization": f"Bearer {session.json()['session_token']}"},
            timeout=30,
        )
        assert [p["id"] for p in listed.json()["payments"]] == [response.json()["id"]]
        # The checkout link follows the edge's port when no public URL is set.
        edge = f"http://localhost:{ports['PAYMESH_HTTP_PORT']}"
        assert response.json()["checkout_url"].startswith(f"{edge}/checkout/pay_")
        # The embedded PostgreSQL's password reaches processes in their URL, never the output.
        password = json.loads((data_dir / "secrets.json").read_text())["postgres_password"]
        assert password not in banner["text"]
        assert _embedded_pids(data_dir), "embedded servers should run under the data dir"
        tree = _stop(process)
    finally:
        if process.poll() is None:
            _kill_tree(process)
    assert tree, "paymesh up should have started child processes"
    assert not _alive(tree), [p.cmdline() for p in _alive(tree)]
    deadline = time.monotonic() + 30
    while _embedded_pids(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _embedded_pids(data_dir)

    # A second start reuses the data: the same demo merchant and keys.
    second = _start_up(data_dir, ports)
    try:
        again = _read_banner(second)
        assert again["secret_key"] == banner["secret_key"]
        _stop(second)
    finally:
        if second.poll() is None:
            _kill_tree(second)
    assert not _embedded_pids(data_dir)
