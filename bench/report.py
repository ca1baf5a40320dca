"""The benchmark's outputs: goal rows with their same-run baselines, the table, JSON and chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    """One figure of the table, with the baseline it is judged against."""

    scenario: str
    figure: str
    value: float | None
    unit: str
    baseline: str = ""
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


def ratio_row(
    scenario: str,
    figure: str,
    value: float | None,
    unit: str,
    *,
    baseline_name: str,
    baseline: float | None,
    baseline_unit: str,
    goal_ratio: float,
) -> Row:
    """A row whose goal is `value >= goal_ratio * baseline`."""
    if value is None or not baseline:
        return Row(scenario, figure, value, unit, f"{baseline_name} n/a", None, f">= {goal_ratio}")
    ratio = value / baseline
    return Row(
        scenario,
        figure,
        value,
        unit,
        f"{baseline_name} {baseline:.1f} {baseline_unit}",
        round(ratio, 3),
        f">= {goal_ratio:.2f}",
        ratio >= goal_ratio,
    )


def limit_row(
    scenario: str, figure: str, value: float | None, unit: str, *, limit: float, below: bool = True
) -> Row:
    """A row whose goal is an absolute limit (`value < limit`)."""
    met = None if value is None else (value < limit if below else value >= limit)
    return Row(scenario, figure, value, unit, "", None, f"< {limit:g} {unit}", met)


def info_row(scenario: str, figure: str, value: float | None, unit: str, baseline: str = "") -> Row:
    """A row that reports a figure without a goal."""
    return Row(scenario, figure, value, unit, baseline)


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def table(rows: Sequence[Row]) -> str:
    """The one table `make bench` prints."""
    header = ("scenario", "figure", "value", "same-run baseline", "ratio", "goal", "status")
    cells = [
        (
            row.scenario,
            row.figure,
            f"{_fmt(row.value)} {row.unit}".strip(),
            row.baseline,
            "" if row.ratio is None else f"{row.ratio:.3g}",
            row.goal,
            {True: "met", False: "NOT MET", None: "" if not row.goal else "n/a"}[row.met],
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    previous = ""
    for cell in cells:
        shown = ("" if cell[0] == previous else cell[0], *cell[1:])
        previous = cell[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any], rows: Sequence[Row]) -> None:
    """The raw results and the table's rows as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "table": [asdict(r) for r in rows]}, indent=2) + "\n")


def chart(path: Path, series: dict[str, list[dict[str, float]]], title: str) -> None:
    """Throughput and p50/p99 latency over time, one row of two panels per scenario."""
    import matplotlib  # noqa: PLC0415 - only `make bench` needs it, not the importers

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [name for name, points in series.items() if points]
    if not names:
        return
    figure, axes = plt.subplots(
        len(names), 2, figsize=(12, 2.2 * len(names)), squeeze=False, constrained_layout=True
    )
    for row, name in enumerate(names):
        points = series[name]
        t = [p["t_s"] for p in points]
        left, right = axes[row][0], axes[row][1]
        left.plot(t, [p["rps"] for p in points], marker=".", color="tab:blue")
        left.set_ylabel("per s")
        left.set_ylim(bottom=0)
        left.set_title(f"{name}: throughput", fontsize=9, loc="left")
        right.plot(t, [p["p50_ms"] for p in points], marker=".", label="p50", color="tab:green")
        right.plot(t, [p["p99_ms"] for p in points], marker=".", label="p99", color="tab:red")
        right.set_ylabel("ms")
        right.set_ylim(bottom=0)
        right.set_title(f"{name}: latency", fontsize=9, loc="left")
        right.legend(fontsize=7, loc="upper right")
        for axis in (left, right):
            axis.grid(alpha=0.3)
            axis.tick_params(labelsize=7)
    for axis in axes[-1]:
        axis.set_xlabel("s from the scenario's start")
    figure.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
