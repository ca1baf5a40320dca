"""The bounded fault run of `make test`; `make chaos` runs it longer (CHAOS_* variables).

CHAOS_SEED picks the faults, their order and pacing, and the workload's mix, so a failing run
can be repeated; CHAOS_PAYMENTS, CHAOS_FAULTS (process, Redis and PostgreSQL faults) and
CHAOS_NETWORK_FAULTS (latency, resets and stalls on the fault proxies) size it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import make_engine, make_sessionmaker, transaction
from services.runtime.platform import LocalPlatform, free_port_settings
from tests.chaos.harness import Backends, platform_variables, proxied_backends, run_chaos

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
PAYMENTS = int(os.environ.get("CHAOS_PAYMENTS", "30"))
FAULTS = int(os.environ.get("CHAOS_FAULTS", "5"))
NETWORK_FAULTS = int(os.environ.get("CHAOS_NETWORK_FAULTS", "8"))
DRAIN_TIMEOUT_S = float(os.environ.get("CHAOS_DRAIN_TIMEOUT_S", "300"))


@pytest.fixture(scope="module")
def chaos_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    """PostgreSQL and Redis of its own, each behind a fault proxy."""
    data_dir: Path = tmp_path_factory.mktemp("paymesh-chaos")
    with proxied_backends(data_dir, seed=SEED) as backends:
        yield backends


@pytest.fixture(scope="module")
def chaos_platform(chaos_backends: Backends) -> Iterator[LocalPlatform]:
    """A platform of its own: this module kills its processes, Redis and PostgreSQL."""
    running = LocalPlatform(
        {
            **free_port_settings(),
            "PAYMESH_DATA_DIR": str(chaos_backends.data_dir),
            **chaos_backends.variables(),
            **platform_variables(),
        }
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def chaos_key(chaos_platform: LocalPlatform) -> str:
    """A test-mode secret key on the chaos platform."""
    engine = make_engine(chaos_platform.settings.require_database_url(), pool_size=1)
    try:
        sessions: sessionmaker[Session] = make_sessionmaker(engine)
        with transaction(sessions) as session:
            made = merchants.create_merchant(session, name="Chaos Shop")
            return merchants.create_api_key(
                session, merchant_id=made.id, mode="test", kind="secret"
            ).key
    finally:
        engine.dispose()


# The run's own patience bounds it; the suite-wide per-test timeout is too short for it.
@pytest.mark.timeout(int(DRAIN_TIMEOUT_S * 4))
def test_faults__nothing_lost_nothing_charged_twice(
    chaos_platform: LocalPlatform, chaos_backends: Backends, chaos_key: str
) -> None:
    print(
        f"\nCHAOS_SEED={SEED} CHAOS_PAYMENTS={PAYMENTS} CHAOS_FAULTS={FAULTS} "
        f"CHAOS_NETWORK_FAULTS={NETWORK_FAULTS}"
    )
    report = run_chaos(
        chaos_platform,
        chaos_backends,
        chaos_key,
        seed=SEED,
        payments=PAYMENTS,
        faults=FAULTS,
        network_faults=NETWORK_FAULTS,
        drain_timeout_s=DRAIN_TIMEOUT_S,
    )
    print(report.render())
    assert len(report.faults) == FAULTS + NETWORK_FAULTS
    assert sum(count for name, count in report.counts.items() if name.startswith("payments ")) == (
        PAYMENTS
    )
