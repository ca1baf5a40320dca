"""Page sizes and opaque page tokens for keyset pagination, for every service.

A page token is the position to resume after, sealed with AES-256-GCM under a key derived
(HKDF-SHA256) from `PAYMESH_PAGE_TOKEN_KEY`: a client can neither read it (a position such as an
entry's sequence number would reveal platform-wide volume) nor forge one. The list it belongs to,
with the tenant and the filters it was issued for, is the associated data, so a token replayed on
another list, for another merchant or with other filters does not open.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import Message
from sqlalchemy import ColumnElement
from sqlalchemy.orm import QueryableAttribute

from services.common.errors import InvalidArgument

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
# Tokens this module issues are about 150 characters; anything much longer is refused unread.
TOKEN_LENGTH_MAX = 512
NONCE_BYTES = 12
_KDF_INFO = b"paymesh/pages/page-token/v1"

Position = list[str | int]
Scope = Mapping[str, str | int | bool | None]


def page_size(value: int, *, maximum: int = PAGE_SIZE_MAX, default: int = PAGE_SIZE_DEFAULT) -> int:
    """The requested page size, `default` for 0, or INVALID_ARGUMENT when out of range."""
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise InvalidArgument.field("page_size", f"must be between 1 and {maximum}")
    return value


@dataclass(frozen=True)
class CreatedRange:
    """A list's created-time filter, `created_gte` and `created_lt`: a half-open range.

    The same two request fields on every list that filters by creation time.
    """

    gte: datetime | None = None
    lt: datetime | None = None

    @classmethod
    def of(cls, request: Message) -> CreatedRange:
        """The request's range; INVALID_ARGUMENT for a time out of range or an empty range."""
        bounds = [_time_field(request, name) for name in ("created_gte", "created_lt")]
        gte, lt = bounds
        if gte is not None and lt is not None and lt <= gte:
            raise InvalidArgument.field("created_lt", "must be later than created_gte")
        return cls(gte, lt)

    def scope(self) -> Scope:
        """The range as part of a page token's scope (a token is refused under another range)."""
        return {
            "created_gte": self.gte.isoformat() if self.gte else "",
            "created_lt": self.lt.isoformat() if self.lt else "",
        }

    def where(
        self, column: ColumnElement[datetime] | QueryableAttribute[datetime]
    ) -> list[ColumnElement[bool]]:
        """The range's conditions on a creation-time column."""
        conditions = []
        if self.gte is not None:
            conditions.append(column >= self.gte)
        if self.lt is not None:
            conditions.append(column < self.lt)
        return conditions


# No created-time filter (the default of every list function).
ANY_TIME = CreatedRange()


def _time_field(request: Message, name: str) -> datetime | None:
    if not request.HasField(name):
        return None
    value = getattr(request, name)
    try:
        return value.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        raise InvalidArgument.field(name, "is not a valid time") from None


def next_page(token: str) -> dict[str, Any]:
    """A list response's paging fields: the token, and whether another page follows.

    Every list reads one item more than the page, so a token is issued exactly when another
    page follows.
    """
    return {"next_page_token": token, "has_more": bool(token)}


def _refused() -> InvalidArgument:
    return InvalidArgument.field("page_token", "is not a token this API issued for this list")


def _bound_to(list_name: str, scope: Scope) -> bytes:
    return json.dumps([list_name, scope], sort_keys=True, separators=(",", ":")).encode()


class PageTokens:
    """Seals positions into page tokens and opens them, with a key derived from the settings'."""

    def __init__(self, master_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(
            master_key.encode()
        )
        self._aead = AESGCM(derived)

    def seal(self, position: Sequence[str | int], *, list_name: str, scope: Scope) -> str:
        """A token that resumes after `position` in `list_name` as seen with `scope`."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        plain = json.dumps(list(position), separators=(",", ":")).encode()
        sealed = nonce + self._aead.encrypt(nonce, plain, _bound_to(list_name, scope))
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, token: str, *, list_name: str, scope: Scope) -> Position | None:
        """The position a token resumes after; None for no token; INVALID_ARGUMENT otherwise."""
        if not token:
            return None
        if len(token) > TOKEN_LENGTH_MAX:
            raise _refused()
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
            plain = self._aead.decrypt(nonce, ciphertext, _bound_to(list_name, scope))
        except (InvalidTag, ValueError) as error:
            raise _refused() from error
        position = json.loads(plain)
        # Only this module seals, so a token that opens holds a list of ids and numbers.
        assert isinstance(position, list), position
        return position

    def seal_after(self, time: datetime, item_id: str, *, list_name: str, scope: Scope) -> str:
        """A token that resumes after the item at (`time`, `item_id`)."""
        return self.seal([time.isoformat(), item_id], list_name=list_name, scope=scope)

    def open_after(
        self, token: str, *, list_name: str, scope: Scope
    ) -> tuple[datetime, str] | None:
        """The (time, id) a token sealed by `seal_after` resumes after; None for no token."""
        position = self.open(token, list_name=list_name, scope=scope)
        if position is None:
            return None
        time_text, item_id = position
        assert isinstance(time_text, str) and isinstance(item_id, str), position
        return datetime.fromisoformat(time_text), item_id

    def __repr__(self) -> str:
        return "PageTokens(***)"
