"""Local state files that hold secrets (`.paymesh/secrets.json`, `demo.json`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.runtime.platform import _secrets_file, write_private


def test_write_private__the_file_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600 even under a permissive umask, with no chmod after the write."""
    previous = os.umask(0)
    try:
        monkeypatch.setattr(Path, "chmod", lambda *_: pytest.fail("chmod after the write"))
        write_private(tmp_path / "secret", "s3cret")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert (tmp_path / "secret").read_text() == "s3cret"


def test_write_private__tightens_a_file_made_earlier_with_looser_bits(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "new"


def test_secrets_file__is_private_and_keeps_its_values(tmp_path: Path) -> None:
    first = _secrets_file(tmp_path)
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    assert _secrets_file(tmp_path) == first
