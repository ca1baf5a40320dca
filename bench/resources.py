"""Memory and CPU of the platform's processes, read with psutil while the benchmarks run.

A named process counts with its descendants (an RQ worker's scheduler, PostgreSQL's backends):
CPU is the tree's total; memory is the largest process's RSS for paymesh's own processes (the
goal is per process, in RSS), and the tree's PSS total for PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

SAMPLE_INTERVAL_S = 1.0
MIB = 1024 * 1024


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory_mib(pid: int, *, proportional: bool = False) -> float:
    """Memory of a process tree in MiB: its largest process's RSS, or the tree's PSS total.

    An RQ worker is two processes (the worker and its forked scheduler) sharing most pages, so
    adding their RSS would count those pages twice; the goal is per process, hence the largest.
    PostgreSQL's backends share its buffers: their PSS total counts each page once.
    """
    largest = 0
    total = 0
    for process in _tree(pid):
        try:
            if proportional:
                total += process.memory_full_info().pss
            else:
                largest = max(largest, process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return (total if proportional else largest) / MIB


def ms_per(seconds: float, count: int, *, digits: int = 3) -> float | None:
    """CPU `seconds` spent on `count` items, in milliseconds per item; None for no items."""
    return round(1000 * seconds / count, digits) if count else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants, in seconds.

    Descendants that exited meanwhile (short-lived backends) are missed; long-lived pools keep
    that error small.
    """
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class Sampler:
    """Samples the memory of named process trees every second on a background thread."""

    pids: dict[str, int]
    proportional: set[str] = field(default_factory=set)
    peak_mib: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> dict[str, float]:
        """One reading of every process tree, in MiB."""
        return {
            name: round(memory_mib(pid, proportional=name in self.proportional), 1)
            for name, pid in self.pids.items()
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, value in self.sample().items():
                self.peak_mib[name] = max(self.peak_mib.get(name, 0.0), value)
            self._stop.wait(SAMPLE_INTERVAL_S)

    def start(self) -> None:
        """Starts sampling (peaks accumulate until `stop`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stops sampling; returns the peaks seen since the first `start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return dict(self.peak_mib)


class CpuMeter:
    """CPU used by each named process tree over a stretch of wall time, as cores busy."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.machine_before = psutil.cpu_times()

    def shares(self) -> dict[str, float]:
        """Cores each tree kept busy since construction (1.0 = one core all the time).

        `machine` is the whole machine's busy cores, other engineers' work included.
        """
        wall_s = max(1e-6, time.monotonic() - self.started)
        result = {
            name: round((cpu_seconds(pid) - self.before[name]) / wall_s, 2)
            for name, pid in self.pids.items()
        }
        after = psutil.cpu_times()
        busy = (after.user + after.system + after.nice) - (
            self.machine_before.user + self.machine_before.system + self.machine_before.nice
        )
        result["machine"] = round(busy / wall_s, 2)
        return result

    def seconds(self) -> dict[str, float]:
        """CPU seconds each tree used since construction."""
        return {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
