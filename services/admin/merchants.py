"""Merchants and their API keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, tuple_
from sqlalchemy.orm import Session

from services.admin.errors import ApiKeyNotFound, MerchantNotFound
from services.admin.models import ApiKey, Merchant
from services.common import pages
from services.common.api_keys import Kind, Mode, generate_key, parse_key
from services.common.errors import InvalidArgument, LiveModeDisabled
from services.common.ids import has_prefix, new_id

DEFAULT_FEE_BPS = 290
DEFAULT_FEE_FIXED = 30
NAME_LENGTH_MAX = 200
FEE_FIXED_MAX = 1_000_000
# A merchant rotates keys now and then; a list this long means something else is wrong.
API_KEYS_MAX = 1000
# How long a rolled key may keep working beside its replacement.
ROLL_EXPIRY_MAX_S = 7 * 24 * 3600


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: the only time its full value exists outside the client."""

    api_key: ApiKey
    key: str


def create_merchant(
    session: Session,
    *,
    name: str,
    fee_bps: int = DEFAULT_FEE_BPS,
    fee_fixed: int = DEFAULT_FEE_FIXED,
) -> Merchant:
    """Creates a merchant with a fee schedule."""
    name = name.strip()
    if not name or len(name) > NAME_LENGTH_MAX:
        raise InvalidArgument.field("name", f"must be 1 to {NAME_LENGTH_MAX} characters")
    _check_fees(fee_bps, fee_fixed)
    merchant = Merchant(id=new_id("mer"), name=name, fee_bps=fee_bps, fee_fixed=fee_fixed)
    session.add(merchant)
    session.flush()
    return merchant


def get_merchant_or_raise(session: Session, merchant_id: str) -> Merchant:
    """The merchant, or MerchantNotFound (also for ids that cannot be one, e.g. with NUL)."""
    merchant = session.get(Merchant, merchant_id) if has_prefix(merchant_id, "mer") else None
    if merchant is None:
        raise MerchantNotFound(f"no merchant {merchant_id!r}")
    return merchant


def create_api_key(session: Session, *, merchant_id: str, mode: Mode, kind: Kind) -> IssuedKey:
    """Issues a new key for a merchant; the caller shows `key` once and forgets it."""
    if mode not in ("test", "live"):
        raise InvalidArgument.field("mode", "must be 'test' or 'live'")
    if kind not in ("secret", "publishable"):
        raise InvalidArgument.field("kind", "must be 'secret' or 'publishable'")
    merchant = get_merchant_or_raise(session, merchant_id)
    if mode == "live" and not merchant.live_enabled:
        raise LiveModeDisabled("this merchant is in test mode only: no live keys")
    key = generate_key(kind=kind, mode=mode)
    parsed = parse_key(key)
    assert parsed is not None, "a generated key always parses"
    api_key = ApiKey(
        id=new_id("key"),
        merchant_id=merchant_id,
        mode=mode,
        kind=kind,
        prefix=parsed.prefix,
        key_hash=parsed.key_hash,
    )
    session.add(api_key)
    session.flush()
    return IssuedKey(api_key=api_key, key=key)


def _key_of(session: Session, key_id: str, merchant_id: str | None) -> ApiKey:
    """The key, locked; ApiKeyNotFound when unknown or (given `merchant_id`) another's."""
    api_key = (
        session.get(ApiKey, key_id, with_for_update=True) if has_prefix(key_id, "key") else None
    )
    if api_key is None or (merchant_id is not None and api_key.merchant_id != merchant_id):
        raise ApiKeyNotFound(f"no API key {key_id!r}")
    return api_key


def revoke_api_key(session: Session, *, key_id: str, merchant_id: str | None = None) -> ApiKey:
    """Revokes a key; revoking twice keeps the first revocation time."""
    api_key = _key_of(session, key_id, merchant_id)
    if api_key.revoke_time is None:
        api_key.revoke_time = datetime.now(UTC)
    return api_key


def roll_api_key(session: Session, *, key_id: str, merchant_id: str, expire_in_s: int) -> IssuedKey:
    """A new key of the same mode and kind; the old one works `expire_in_s` more (0: none).

    Rolling a key that is already rolled only brings its expiry nearer, never further.
    """
    if not 0 <= expire_in_s <= ROLL_EXPIRY_MAX_S:
        raise InvalidArgument.field(
            "expire_in_seconds", f"must be between 0 and {ROLL_EXPIRY_MAX_S}"
        )
    old = _key_of(session, key_id, merchant_id)
    now = datetime.now(UTC)
    if old.revoke_time is not None or (old.expire_time is not None and old.expire_time <= now):
        raise ApiKeyNotFound(f"API key {key_id!r} is revoked or expired")
    issued = create_api_key(
        session,
        merchant_id=merchant_id,
        mode=old.mode,  # type: ignore[arg-type]  # checked when it was created
        kind=old.kind,  # type: ignore[arg-type]
    )
    if expire_in_s == 0:
        old.revoke_time = now
    else:
        expire_time = now + timedelta(seconds=expire_in_s)
        old.expire_time = min(old.expire_time or expire_time, expire_time)
    session.flush()
    return issued


def authenticate_api_key(session: Session, key: str) -> tuple[ApiKey, Merchant] | None:
    """The live key and its merchant, or None when unknown, malformed, revoked or expired."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    rows = session.execute(
        select(ApiKey, Merchant)
        .join(Merchant, Merchant.id == ApiKey.merchant_id)
        .where(
            ApiKey.prefix == parsed.prefix,
            ApiKey.revoke_time.is_(None),
            or_(ApiKey.expire_time.is_(None), ApiKey.expire_time > datetime.now(UTC)),
        )
    ).all()
    for api_key, merchant in rows:
        if secrets.compare_digest(api_key.key_hash, parsed.key_hash):
            return api_key, merchant
    return None


def _check_fees(fee_bps: int, fee_fixed: int) -> None:
    if not 0 <= fee_bps <= 10_000:
        raise InvalidArgument.field("fee_bps", "must be between 0 and 10000")
    if not 0 <= fee_fixed <= FEE_FIXED_MAX:
        raise InvalidArgument.field("fee_fixed", f"must be between 0 and {FEE_FIXED_MAX}")


def update_fees(session: Session, *, merchant_id: str, fee_bps: int, fee_fixed: int) -> Merchant:
    """Sets a merchant's fee schedule."""
    _check_fees(fee_bps, fee_fixed)
    merchant = session.get(Merchant, merchant_id, with_for_update=True)
    if merchant is None:
        raise MerchantNotFound(f"no merchant {merchant_id!r}")
    merchant.fee_bps = fee_bps
    merchant.fee_fixed = fee_fixed
    session.flush()
    return merchant


def list_merchants(
    session: Session, *, tokens: pages.PageTokens, page_size: int = 0, page_token: str = ""
) -> tuple[list[Merchant], str]:
    """A page of merchants, newest first, and the next page's token ("" on the last)."""
    size = pages.page_size(page_size)
    query = (
        select(Merchant).order_by(Merchant.create_time.desc(), Merchant.id.desc()).limit(size + 1)
    )
    position = tokens.open_after(page_token, list_name="merchants", scope={})
    if position is not None:
        query = query.where(tuple_(Merchant.create_time, Merchant.id) < position)
    rows = list(session.scalars(query))
    if len(rows) > size:
        last = rows[size - 1]
        return rows[:size], tokens.seal_after(
            last.create_time, last.id, list_name="merchants", scope={}
        )
    return rows, ""


def list_api_keys(session: Session, *, merchant_id: str, mode: str | None = None) -> list[ApiKey]:
    """A merchant's keys (in one mode, if given), newest first, revoked ones included."""
    get_merchant_or_raise(session, merchant_id)
    query = select(ApiKey).where(ApiKey.merchant_id == merchant_id)
    if mode is not None:
        query = query.where(ApiKey.mode == mode)
    return list(
        session.scalars(query.order_by(ApiKey.create_time.desc(), ApiKey.id).limit(API_KEYS_MAX))
    )
