"""The load generators the benchmarks drive: `wrk` (HTTP, Lua scripts in bench/wrk/) and
`pgbench` (the PostgreSQL baseline). Neither runs inside a process under test.

A run is cut into back-to-back slices of a few seconds so that each figure comes with a time
series (throughput, p50, p99 per slice) for the chart; the summary figures are over the slices.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WRK_DIR = Path(__file__).resolve().parent / "wrk"
WRK_MARKER = "PAYMESH_WRK "
WRK_THREADS = 2  # one per core of the benchmark machine
WRK_TIMEOUT_S = 10
PGBENCH_DATABASE = "pgbench"


class LoadGeneratorError(RuntimeError):
    """A load generator is missing or failed."""


@dataclass(frozen=True)
class Point:
    """One slice of a run: when it started (s from the run's start) and what it measured."""

    t_s: float
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass
class Run:
    """A throughput run: totals, latency percentiles and the per-slice series."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    series: list[Point] = field(default_factory=list)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Completed requests (or transactions) per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The run as plain JSON."""
        data = asdict(self)
        data["rps"] = round(self.rps, 1)
        return data


def require_wrk() -> str:
    """The wrk executable, or a clear error (the Makefile's `bench` target installs it)."""
    path = shutil.which("wrk")
    if path is None:
        raise LoadGeneratorError("wrk is not installed: apt-get install -y wrk (make bench does)")
    return path


def parse_wrk(output: str) -> dict[str, Any]:
    """The JSON line the Lua `done()` of bench/wrk/common.lua prints."""
    for line in output.splitlines():
        if line.startswith(WRK_MARKER):
            data: dict[str, Any] = json.loads(line[len(WRK_MARKER) :])
            return data
    raise LoadGeneratorError(f"wrk printed no {WRK_MARKER.strip()} line:\n{output[-2000:]}")


def wrk(
    script: str,
    url: str,
    *,
    connections: int,
    duration_s: float,
    args: Sequence[str] = (),
    threads: int = WRK_THREADS,
) -> dict[str, Any]:
    """Runs wrk once with a script from bench/wrk/; returns its parsed report."""
    command = [
        require_wrk(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(WRK_DIR / script),
        url,
        "--",
        *args,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if completed.returncode != 0:
        raise LoadGeneratorError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return parse_wrk(completed.stdout)


def merge_slices(reports: list[tuple[float, dict[str, Any]]], *, ok_status: bool = True) -> Run:
    """One run from back-to-back wrk slices (started at the given offsets).

    The run's p50/p99 are request-weighted means of the slices' (wrk keeps no histogram across
    processes); throughput is total requests over total time.
    """
    requests = sum(int(r["requests"]) for _, r in reports)
    duration_s = sum(int(r["duration_us"]) for _, r in reports) / 1e6
    weights = [max(1, int(r["requests"])) for _, r in reports]
    total_weight = sum(weights)

    def weighted(name: str) -> float:
        values = [int(r["latency_us"][name]) / 1000 for _, r in reports]
        return sum(v * w for v, w in zip(values, weights, strict=True)) / total_weight

    by_kind: dict[str, int] = {}
    for _, r in reports:
        for kind, count in r["errors"].items():
            by_kind[kind] = by_kind.get(kind, 0) + int(count)
    errors = sum(count for kind, count in by_kind.items() if ok_status or kind != "status")
    series = [
        Point(
            t_s=round(offset, 2),
            rps=round(int(r["requests"]) / (int(r["duration_us"]) / 1e6), 1),
            p50_ms=round(int(r["latency_us"]["p50"]) / 1000, 2),
            p99_ms=round(int(r["latency_us"]["p99"]) / 1000, 2),
        )
        for offset, r in reports
    ]
    return Run(
        requests=requests,
        duration_s=round(duration_s, 3),
        p50_ms=round(weighted("p50"), 2),
        p99_ms=round(weighted("p99"), 2),
        errors=errors,
        series=series,
        errors_by_kind={kind: count for kind, count in by_kind.items() if count},
    )


def wrk_run(
    script: str,
    url: str,
    *,
    connections: int,
    duration_s: float,
    slice_s: float,
    args: Sequence[str] = (),
    non_2xx_is_error: bool = True,
) -> Run:
    """Runs wrk for `duration_s` in slices of `slice_s`; returns the merged run."""
    slices = max(1, math.ceil(duration_s / slice_s))
    started = time.monotonic()
    reports: list[tuple[float, dict[str, Any]]] = []
    for _ in range(slices):
        offset = time.monotonic() - started
        reports.append(
            (offset, wrk(script, url, connections=connections, duration_s=slice_s, args=args))
        )
    return merge_slices(reports, ok_status=non_2xx_is_error)


# --- pgbench --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """How to reach the platform's PostgreSQL with its own client programs."""

    bin_dir: Path
    host: str
    port: int
    user: str
    password: str = field(repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a client program: the password rides in it, never in argv."""
        return {**os.environ, "PGPASSWORD": self.password, **extra}

    def command(self, program: str, *args: str) -> list[str]:
        """A client program's command line against this server."""
        return [
            str(self.bin_dir / program),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            *args,
        ]


def _run(command: list[str], *, timeout_s: float, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
    )
    if completed.returncode != 0:
        raise LoadGeneratorError(
            f"{Path(command[0]).name} failed ({completed.returncode}): "
            f"{completed.stderr[-2000:]}{completed.stdout[-1000:]}"
        )
    return completed.stdout


def pgbench_init(pg: Postgres, *, scale: int) -> None:
    """A fresh `pgbench` database at `scale` (100,000 accounts per unit) beside paymesh's."""
    _run(
        pg.command(
            "psql", "-X", "-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {PGBENCH_DATABASE}"
        ),
        timeout_s=60,
        env=pg.env(),
    )
    _run(
        pg.command("psql", "-X", "-d", "postgres", "-c", f"CREATE DATABASE {PGBENCH_DATABASE}"),
        timeout_s=60,
        env=pg.env(),
    )
    _run(
        pg.command("pgbench", "-i", "-q", "-s", str(scale), PGBENCH_DATABASE),
        timeout_s=600,
        env=pg.env(),
    )


def parse_pgbench_log(lines: Sequence[str], *, slice_s: float) -> Run:
    """A run from pgbench's per-transaction log (`-l`).

    Each line is `client transaction latency_us script epoch_s epoch_us [lag]`; the series is
    cut into `slice_s` slices by completion time, the percentiles are exact.
    """
    ends: list[float] = []
    latencies_ms: list[float] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue
        latencies_ms.append(int(parts[2]) / 1000)
        ends.append(int(parts[4]) + int(parts[5]) / 1e6)
    if not ends:
        raise LoadGeneratorError("pgbench logged no transactions")
    start = min(e - lat / 1000 for e, lat in zip(ends, latencies_ms, strict=True))
    duration_s = max(ends) - start
    buckets: dict[int, list[float]] = {}
    for end, latency in zip(ends, latencies_ms, strict=True):
        buckets.setdefault(int((end - start) // slice_s), []).append(latency)
    series = []
    for index in sorted(buckets):
        values = buckets[index]
        width = min(slice_s, duration_s - index * slice_s)
        if width < slice_s / 2:
            continue  # the ragged last slice would show a misleading dip
        series.append(
            Point(
                t_s=round(index * slice_s, 2),
                rps=round(len(values) / width, 1),
                p50_ms=round(percentile(values, 50), 2),
                p99_ms=round(percentile(values, 99), 2),
            )
        )
    return Run(
        requests=len(latencies_ms),
        duration_s=round(duration_s, 3),
        p50_ms=round(percentile(latencies_ms, 50), 2),
        p99_ms=round(percentile(latencies_ms, 99), 2),
        series=series,
    )


def pgbench_run(
    pg: Postgres, *, clients: int, duration_s: float, slice_s: float, log_dir: Path
) -> Run:
    """TPC-B-like pgbench at `clients` clients with synchronous commit on."""
    log_dir.mkdir(parents=True, exist_ok=True)
    prefix = log_dir / f"pgbench_c{clients}"
    for old in log_dir.glob(f"{prefix.name}*"):
        old.unlink()
    env = pg.env(PGOPTIONS="-c synchronous_commit=on")
    output = _run(
        pg.command(
            "pgbench",
            "-n",  # the tables were vacuumed by the initialization
            "-c",
            str(clients),
            "-j",
            str(min(clients, WRK_THREADS)),
            "-T",
            str(max(1, round(duration_s))),
            "-l",
            f"--log-prefix={prefix}",
            PGBENCH_DATABASE,
        ),
        timeout_s=duration_s + 120,
        env=env,
    )
    lines: list[str] = []
    for path in sorted(log_dir.glob(f"{prefix.name}*")):
        lines += path.read_text().splitlines()
    run = parse_pgbench_log(lines, slice_s=slice_s)
    for line in output.splitlines():
        if line.startswith(("tps", "number of failed")):
            run.notes.append(line.strip())
    return run


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of `values` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
