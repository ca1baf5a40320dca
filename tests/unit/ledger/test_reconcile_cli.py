"""`paymesh reconcile` argument handling and its answer when the ledger cannot be reached."""

from __future__ import annotations

import socket

import pytest

from services.runtime import cli


def test_times_must_be_iso_8601(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["reconcile", "--start", "yesterday", "--end", "2026-11-26T00:00:00Z"])
    assert raised.value.code == 2
    assert "--start" in capsys.readouterr().err


def test_a_time_without_zone_is_utc() -> None:
    assert cli._utc_time("2026-11-26T10:00:00").utcoffset() is not None
    assert cli._utc_time("2026-11-26T10:00:00+02:00").utcoffset().total_seconds() == 7200  # type: ignore[union-attr]


def test_unreachable_ledger_exits_2_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PAYMESH_LEDGER_TARGET", f"127.0.0.1:{port}")
    code = cli.main(
        [
            "reconcile",
            "--start",
            "2026-11-25T00:00:00Z",
            "--end",
            "2026-11-26T00:00:00Z",
            "--timeout-s",
            "3",
        ]
    )
    assert code == 2
    assert "reconciliation failed" in capsys.readouterr().out
