"""Page sizes and opaque page tokens for keyset pagination over (time, id), for every service."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from services.common.errors import InvalidArgument

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100


def page_size(value: int, *, maximum: int = PAGE_SIZE_MAX, default: int = PAGE_SIZE_DEFAULT) -> int:
    """The requested page size, `default` for 0, or INVALID_ARGUMENT when out of range."""
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise InvalidArgument.field("page_size", f"must be between 1 and {maximum}")
    return value


def encode_token(time: datetime, item_id: str) -> str:
    """A token that resumes after the item at (`time`, `item_id`)."""
    raw = json.dumps([time.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str] | None:
    """The position a token resumes after; None for no token; INVALID_ARGUMENT when forged."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        time_text, item_id = json.loads(raw)
        if not isinstance(item_id, str) or not isinstance(time_text, str):
            raise ValueError("bad token")
        return datetime.fromisoformat(time_text), item_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidArgument.field("page_token", "is not a token this API issued") from error
