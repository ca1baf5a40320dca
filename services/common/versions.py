"""API versions: dated, as Stripe's are (docs/api.md, Versioning).

A merchant is pinned to the version that is newest when it is created (`merchants.api_version`);
a request may ask for another with the `Paymesh-Version` header. Changes that cannot break a
client (a new endpoint, a new optional field, a new event type or error code) ship without a
version; a change that can (a field removed or renamed, a type or a default changed, a status
that means something else) ships as a new dated version, and the old behaviour stays behind
the old versions for at least a year. The contracts are checked against the last released ones
with `buf breaking` in `make test` (contracts/released/).
"""

from __future__ import annotations

from services.common.errors import InvalidArgument

# Oldest first; each entry says what it changed.
VERSIONS: dict[str, str] = {
    "2026-12-05": "The first dated version: JSON integers, the REST error shape, strict input.",
}
LATEST = next(reversed(VERSIONS))
HEADER = "paymesh-version"


class ApiVersionUnknown(InvalidArgument):
    """The `Paymesh-Version` header names no version of the API (docs/api.md lists them)."""

    reason = "API_VERSION_UNKNOWN"


def requested(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The version a request asks for in its `Paymesh-Version` header, or None; unknown ones
    are refused."""
    for name, value in metadata or ():
        if name == HEADER and isinstance(value, str):
            if value not in VERSIONS:
                raise ApiVersionUnknown.field(
                    "Paymesh-Version", f"must be one of {', '.join(VERSIONS)}"
                )
            return value
    return None
