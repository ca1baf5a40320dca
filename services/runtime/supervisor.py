"""The supervisor of `paymesh up`: runs every process, restarts the ones that die, stops them all.

Each process is exec'd directly (no shell between), in a process group of its own, and asked
to die with the supervisor (`PR_SET_PDEATHSIG`). Its exit is seen by waiting on its pid, not by
the end of its output, which a leftover child (RQ's scheduler) could hold open; the whole group
is then killed, so nothing it forked runs on, and it starts again after a pause that doubles
with each quick death. A process that keeps dying at start (a port taken, a broken setting)
stops the platform with exit status 1 rather than loop unseen. Ctrl-C or SIGTERM stops
everything: SIGTERM to each group, SIGKILL to what is left after a grace period.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import IO

from services.common.lifetime import die_with_parent

logger = logging.getLogger(__name__)

RESTART_DELAY_MIN_S = 1.0
RESTART_DELAY_MAX_S = 30.0
# A process that ran this long before dying is restarted after the shortest pause again.
STABLE_AFTER_S = 30.0
# This many quick deaths in a row (each within STABLE_AFTER_S of its start) stop the platform.
QUICK_DEATHS_MAX = 5
# How long processes get to stop after SIGTERM (a worker finishes its job in hand, idle workers
# leave within queue.STOP_IDLE_GRACE_S) before the rest of their groups is killed.
STOP_GRACE_S = 30.0
POLL_INTERVAL_S = 0.2


@dataclass
class _Child:
    """One supervised process and its restart state."""

    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    restart_at_s: float | None = None
    restart_delay_s: float = RESTART_DELAY_MIN_S
    quick_deaths: int = 0


class Supervisor:
    """Runs named commands until asked to stop or one cannot stay up."""

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        env: dict[str, str],
        output: IO[str] = sys.stdout,
    ) -> None:
        self.children = {name: _Child(name, command) for name, command in commands.items()}
        self.env = env
        self.output = output
        self.stopping = threading.Event()
        self.failed = False
        self._width = max(len(name) for name in commands)
        self._output_lock = threading.Lock()

    def run(self) -> int:
        """Starts every process and supervises them; 0 after a requested stop, 1 on a failure."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in self.children.values():
                self._start(child)
            while not self.stopping.wait(POLL_INTERVAL_S):
                self._check()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _start(self, child: _Child) -> None:
        supervisor_pid = os.getpid()
        # Spawned from the main thread only: Linux sends the death signal when the thread
        # that forked ends, and this one lives as long as the supervisor.
        assert threading.current_thread() is threading.main_thread()
        child.process = subprocess.Popen(
            child.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own group: Ctrl-C reaches the supervisor only, and a death takes the group.
            start_new_session=True,
            preexec_fn=_dies_with(supervisor_pid),  # noqa: PLW1509 - prctl only, no locks
        )
        child.started_s = time.monotonic()
        child.restart_at_s = None
        assert child.process.stdout is not None
        threading.Thread(
            target=self._pump,
            args=(child.name, child.process.stdout),
            name=f"output-{child.name}",
            daemon=True,
        ).start()

    def _check(self) -> None:
        """Notices deaths and starts the processes whose pause is over."""
        now_s = time.monotonic()
        for child in self.children.values():
            if child.process is not None and _exited(child.process.pid):
                self._on_death(child, now_s)
                if self.failed:
                    return
            if child.restart_at_s is not None and now_s >= child.restart_at_s:
                logger.warning("%s: starting again", child.name)
                self._start(child)

    def _on_death(self, child: _Child, now_s: float) -> None:
        assert child.process is not None
        # The leader is dead but not yet reaped, so its pid still names its group: nothing the
        # process forked may live on without it.
        _kill_group(child.process.pid, signal.SIGKILL)
        code = child.process.wait()
        child.process = None
        ran_s = now_s - child.started_s
        if ran_s >= STABLE_AFTER_S:
            child.quick_deaths = 0
            child.restart_delay_s = RESTART_DELAY_MIN_S
        else:
            child.quick_deaths += 1
        if child.quick_deaths >= QUICK_DEATHS_MAX:
            logger.error(
                "%s died %d times in a row within %.0f s of starting (last exit status %s); "
                "stopping the platform",
                child.name,
                child.quick_deaths,
                STABLE_AFTER_S,
                code,
            )
            self.failed = True
            self.stopping.set()
            return
        logger.warning(
            "%s exited unexpectedly (status %s) after %.0f s; starting again in %.0f s",
            child.name,
            code,
            ran_s,
            child.restart_delay_s,
        )
        child.restart_at_s = now_s + child.restart_delay_s
        child.restart_delay_s = min(child.restart_delay_s * 2, RESTART_DELAY_MAX_S)

    def _stop_all(self) -> None:
        running = [child.process for child in self.children.values() if child.process]
        for process in running:
            _kill_group(process.pid, signal.SIGTERM)
        deadline_s = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", process.args)
        for process in running:
            # Its group may outlive it (a child that ignored SIGTERM): kill what is left.
            _kill_group(process.pid, signal.SIGKILL)
            process.wait()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        """Copies a process's output, each line prefixed with the time and its name."""
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            stamp = datetime.datetime.now().strftime("%H:%M:%S")
            with self._output_lock:
                self.output.write(f"{stamp} {name:<{self._width}} | {line}\n")
                self.output.flush()
        stream.close()


def _dies_with(parent_pid: int) -> Callable[[], None]:
    """A pre-exec hook: the child gets SIGTERM (a graceful stop) when the supervisor dies."""

    def hook() -> None:
        die_with_parent(signal.SIGTERM, parent_pid=parent_pid)

    return hook


def _exited(pid: int) -> bool:
    """Whether the child `pid` has ended, leaving it unreaped (its pid keeps naming its group)."""
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return result is not None


def _kill_group(pgid: int, signum: int) -> None:
    # The group may have ended already.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
