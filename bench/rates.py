"""Judging fixed-rate end-to-end runs, and the search for the highest rate the platform sustains.

Pure functions over the figures `bench/run.py` collects, so the judging is unit-tested without
a platform. A run at an offered rate *holds* when:

- the creates kept up: at least `KEPT_SHARE` of the offered payments were created;
- the backlog is bounded: it is not growing over the second half of the load (its least-squares
  slope is at most `GROWTH_SHARE` of the offered rate, in items per second), and at the end of
  the load it is at most `BACKLOG_S` seconds of offered work (the slope's floor,
  `GROWTH_MIN_PER_S`, keeps sampling noise of short, slow runs from counting as growth);
- create -> webhook-received p99 is at most `P99_MS_MAX`, counting a payment whose webhook had
  not arrived when the run was judged as later than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KEPT_SHARE = 0.95
GROWTH_SHARE = 0.05
# Short runs at low rates: counts sampled once a second over a few seconds give slopes of an
# item or two per second from noise alone (seen at 10/s in 4 s runs), so growth below this
# is not judged growth.
GROWTH_MIN_PER_S = 2.0
BACKLOG_S = 5.0
BACKLOG_ITEMS_MIN = 20.0
P99_MS_MAX = 1000.0
LATE_SHARE_MAX = 0.01  # p99 <= the limit means at most 1 % of the payments later than it


@dataclass(frozen=True)
class Backlog:
    """Whether the work not done yet stayed bounded during a fixed-rate load."""

    at_end: float
    bound: float
    slope_per_s: float
    growth_max_per_s: float

    @property
    def bounded(self) -> bool:
        """Small at the end and not growing."""
        return self.at_end <= self.bound and self.slope_per_s <= self.growth_max_per_s


def slope_per_s(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t_s, value) points; 0 with fewer than two distinct times."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def judge_backlog(samples: Sequence[tuple[float, float]], *, rate: float, load_s: float) -> Backlog:
    """The backlog of a load of `load_s` seconds at `rate`/s from (t_s, total) samples.

    The trend is taken over the load's second half: the first half includes the ramp from an
    empty pipeline to its steady in-flight level, which grows at any rate.
    """
    during = [(t, v) for t, v in samples if t <= load_s]
    second_half = [(t, v) for t, v in during if t >= load_s / 2]
    return Backlog(
        at_end=during[-1][1] if during else 0.0,
        bound=round(max(BACKLOG_ITEMS_MIN, rate * BACKLOG_S)),
        slope_per_s=round(slope_per_s(second_half), 2),
        growth_max_per_s=round(max(GROWTH_MIN_PER_S, GROWTH_SHARE * rate), 2),
    )


def late_share(latencies_ms: Sequence[float], *, missing: int, limit_ms: float) -> float:
    """Share of payments later than `limit_ms`, a webhook not received yet counting as late.

    Only valid when the run is judged at least `limit_ms` after the last create: then a
    payment whose webhook has not arrived is later than the limit.
    """
    total = len(latencies_ms) + missing
    if total == 0:
        return 0.0
    return (sum(1 for latency in latencies_ms if latency > limit_ms) + missing) / total


@dataclass(frozen=True)
class Step:
    """One fixed-rate run of the search and its verdict."""

    rate: float
    held: bool
    why: str = ""


def judge_step(*, rate: float, load_s: float, created: int, backlog: Backlog, late: float) -> Step:
    """Whether a fixed-rate run held, and if not, the first reason it did not."""
    if created < KEPT_SHARE * rate * load_s:
        return Step(rate, False, f"created {created} of {rate * load_s:.0f} offered")
    if not backlog.bounded:
        return Step(
            rate,
            False,
            f"backlog {backlog.at_end:.0f} (bound {backlog.bound:.0f}), "
            f"growing {backlog.slope_per_s}/s",
        )
    if late > LATE_SHARE_MAX:
        return Step(rate, False, f"{late:.1%} later than {P99_MS_MAX:.0f} ms")
    return Step(rate, True)


def next_rate(
    steps: Sequence[Step], *, start: float, factor: float, bisections: int, cap: float
) -> float | None:
    """The next offered rate of the search, or None when it is over.

    Steps up by `factor` from `start` while runs hold (to `cap` at most); after the first run
    that does not hold, bisects `bisections` times between the highest rate that held and the
    lowest that did not (from zero when even the first did not).
    """
    if not steps:
        return start
    failed = [step.rate for step in steps if not step.held]
    held = [step.rate for step in steps if step.held]
    if not failed:
        last = steps[-1].rate
        return None if last >= cap else min(cap, last * factor)
    first_failure = next(index for index, step in enumerate(steps) if not step.held)
    if len(steps) - 1 - first_failure >= bisections:
        return None
    low = max((rate for rate in held if rate < min(failed)), default=0.0)
    return round((low + min(failed)) / 2, 1)


def highest_held(steps: Sequence[Step]) -> float | None:
    """The highest rate that held below every rate that did not (None if none held)."""
    failed = [step.rate for step in steps if not step.held]
    ceiling = min(failed, default=float("inf"))
    held = [step.rate for step in steps if step.held and step.rate < ceiling]
    return max(held, default=None)
