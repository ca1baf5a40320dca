"""API key format: `sk_test_` + 32 random base62 characters + a 6-character CRC32 checksum.

The checksum lets every service refuse a mistyped or made-up key without a lookup, and lets
secret scanners recognise a real key. Keys are stored as a SHA-256 hash (they carry 190 bits of
randomness, so a slow KDF adds nothing) next to a short prefix used to find the row.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Literal

from services.common.ids import ALPHABET

Mode = Literal["test", "live"]
Kind = Literal["secret", "publishable"]
KIND_TAGS: dict[str, Kind] = {"sk": "secret", "pk": "publishable"}
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
# What is shown of a key after it was created: its type tags and 8 random characters.
PREFIX_RANDOM_LENGTH = 8

_KEY_RE = re.compile(
    rf"^(sk|pk)_(test|live)_([A-Za-z0-9]{{{RANDOM_LENGTH}}})([A-Za-z0-9]{{{CHECKSUM_LENGTH}}})$"
)


@dataclass(frozen=True)
class ParsedKey:
    """A well-formed key, split into its parts."""

    kind: Kind
    mode: Mode
    prefix: str
    key_hash: str


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), CHECKSUM_LENGTH)


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key(*, kind: Kind, mode: Mode) -> str:
    """A new random key of this kind and mode."""
    tag = "sk" if kind == "secret" else "pk"
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return f"{tag}_{mode}_{random_part}{_checksum(random_part)}"


def parse_key(key: str) -> ParsedKey | None:
    """The key's parts, or None when it is malformed or its checksum is wrong."""
    match = _KEY_RE.match(key)
    if match is None:
        return None
    tag, mode, random_part, checksum = match.groups()
    if not secrets.compare_digest(checksum, _checksum(random_part)):
        return None
    return ParsedKey(
        kind=KIND_TAGS[tag],
        mode="live" if mode == "live" else "test",
        prefix=f"{tag}_{mode}_{random_part[:PREFIX_RANDOM_LENGTH]}",
        key_hash=hash_key(key),
    )
