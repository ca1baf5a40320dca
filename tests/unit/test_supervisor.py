"""The supervisor of `paymesh up`: deaths are seen, groups die with their leader, loops stop it.

The supervisor runs on the test's main thread (it takes SIGINT and SIGTERM there); a helper
thread plays the operator's part and stops it.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from services.runtime.supervisor import QUICK_DEATHS_MAX, Supervisor

ROOT = Path(__file__).resolve().parents[2]

# Starts a child of its own (in its process group), notes both pids, then waits to be killed.
PARENT_AND_CHILD = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()} {child.pid}\\n")
time.sleep(120)
"""


def _run_with(supervisor: Supervisor, operator: Callable[[], None]) -> int:
    """Runs the supervisor while `operator` acts on another thread; re-raises its failure."""
    failures: list[BaseException] = []

    def act() -> None:
        try:
            operator()
        except BaseException as error:
            failures.append(error)
        finally:
            supervisor.stopping.set()

    helper = threading.Thread(target=act, daemon=True)
    helper.start()
    code = supervisor.run()
    helper.join(timeout=30)
    if failures:
        raise failures[0]
    return code


def _lines(path: Path, count: int, *, timeout_s: float = 30.0) -> list[list[int]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [[int(pid) for pid in line.split()] for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"{count} starts not seen in {timeout_s}s")


def _gone(pid: int, *, timeout_s: float = 5.0) -> bool:
    """Whether `pid` ends (or is a zombie) within `timeout_s`: a killed process takes a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status: str = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            return True
        if status == "zombie":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_killed_process_is_restarted_and_what_it_forked_dies_with_it(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    output = io.StringIO()
    supervisor = Supervisor(
        {"forker": [sys.executable, "-c", PARENT_AND_CHILD, str(pids)]},
        env={},
        output=output,
    )
    seen: list[list[int]] = []

    def kill_once() -> None:
        (first,) = _lines(pids, 1)
        psutil.Process(first[0]).kill()
        seen.extend(_lines(pids, 2))

    assert _run_with(supervisor, kill_once) == 0
    (parent, child), (restarted, restarted_child) = seen
    assert restarted != parent
    assert _gone(child), "the killed process's child must not outlive it"
    # A requested stop ends the restarted process and what it forked, too.
    assert _gone(restarted) and _gone(restarted_child)


def test_a_process_that_keeps_dying_at_start_stops_the_platform_with_status_1() -> None:
    output = io.StringIO()
    supervisor = Supervisor(
        {
            "broken": [sys.executable, "-c", "import sys; print('bad setting'); sys.exit(3)"],
            "fine": [sys.executable, "-c", "import time; time.sleep(120)"],
        },
        env={},
        output=output,
    )
    started = time.monotonic()

    code = supervisor.run()

    assert code == 1
    # Restarted with doubling pauses (1 + 2 + 4 + 8 s) before it is given up.
    assert time.monotonic() - started >= 2 ** (QUICK_DEATHS_MAX - 1) - 1
    fine = supervisor.children["fine"]
    assert fine.process is None or fine.process.poll() is not None
    assert "broken | bad setting" in output.getvalue()


# Notes its pid, then waits to be ended.
SLEEPER = """
import os, sys, time
with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()}\\n")
time.sleep(120)
"""
# A supervisor of one sleeper, in a process of its own: the test kills it as a crash would.
SUPERVISOR = """
import sys
from services.runtime.supervisor import Supervisor
sleeper = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
sys.exit(Supervisor({"sleeper": sleeper}, env={}).run())
"""


def test_a_killed_supervisor_takes_its_processes_with_it(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, SLEEPER, str(pids)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    leftover: list[int] = []
    try:
        ((sleeper,),) = _lines(pids, 1)
        # SIGKILL runs no handler: only the death signal asked for at the fork can end it.
        supervisor.kill()
        supervisor.wait(timeout=10)
        if not _gone(sleeper):
            leftover.append(sleeper)
        assert not leftover, "a supervised process must not outlive its supervisor"
    finally:
        supervisor.kill()  # does nothing once it has been waited for
        supervisor.wait(timeout=10)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
