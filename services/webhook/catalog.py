"""The event type catalog, as the contracts define it (protos/paymesh/webhook/v1/event_types.proto).

Each value of the `EventType` enum carries its entry (name, description, the message that
`data.object` holds) as an `event_type` option; `entries` reads them from the generated
descriptors, so no list of types is kept in Python. The JSON Schema of each type's object is
generated from the same contracts by tools/openapi.py into gen/event_types.json (`make check-gen`
fails when it is stale); `load_definitions` joins the two and refuses a file that disagrees with
the descriptors.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from paymesh.webhook.v1 import event_types_pb2

from services.common.errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "gen" / "event_types.json"
# What `enabled_events` may hold instead of types: every type, present and future.
ALL_TYPES = "*"


@dataclass(frozen=True)
class EventTypeEntry:
    """One event type of the catalog."""

    name: str
    description: str
    # The full name of the message that `data.object` holds, e.g. "paymesh.payment.v1.Payment".
    object_type: str


@dataclass(frozen=True)
class EventTypeDefinition:
    """A catalog entry with the JSON Schema of its `data.object`."""

    entry: EventTypeEntry
    object_schema: dict[str, Any]


@cache
def entries() -> tuple[EventTypeEntry, ...]:
    """Every event type, in the enum's order, read from the `EventType` values' options."""
    found: list[EventTypeEntry] = []
    for value in event_types_pb2.EventType.DESCRIPTOR.values:
        if value.number == event_types_pb2.EVENT_TYPE_UNSPECIFIED:
            continue
        options = value.GetOptions().Extensions[event_types_pb2.event_type]
        # A value without its entry is a mistake in the contracts, not in a request.
        assert options.name and options.description and options.object, value.name
        found.append(EventTypeEntry(options.name, options.description, options.object))
    assert len({entry.name for entry in found}) == len(found), "an event type is defined twice"
    return tuple(found)


@cache
def names() -> frozenset[str]:
    """The name of every event type."""
    return frozenset(entry.name for entry in entries())


def check_known(value: str, *, field: str) -> None:
    """INVALID_ARGUMENT naming `field` and the value unless `value` is a catalog type."""
    if value not in names():
        raise InvalidArgument.field(
            field, f"unknown event type {value[:100]!r}; GET /v1/event_types lists them"
        )


def load_definitions(path: Path = DEFINITIONS) -> tuple[EventTypeDefinition, ...]:
    """Every event type with its object's schema, from the generated file.

    Raises RuntimeError (the service does not start) when the file is missing or was generated
    from other contracts than the descriptors loaded here.
    """
    try:
        listed = json.loads(path.read_text())["event_types"]
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(f"cannot read the event type catalog {path}: run 'make gen'") from error
    generated = [
        EventTypeEntry(item["name"], item["description"], item["object_type"]) for item in listed
    ]
    if generated != list(entries()):
        raise RuntimeError(f"{path} does not match the contracts: run 'make gen'")
    return tuple(
        EventTypeDefinition(entry, item["object_schema"])
        for entry, item in zip(entries(), listed, strict=True)
    )


# The type of a test event when the request names none.
TEST_EVENT_TYPE_DEFAULT = "payment.succeeded"
# Members of an example object that no event carries: secrets are shown once, never in events.
_SECRET_MEMBERS = ("client_secret", "secret")


def test_object(definition: EventTypeDefinition, *, merchant_id: str) -> dict[str, Any]:
    """The `data.object` of a test event: the type's example, a test-mode object in its state.

    The example (protos/examples.json, on the type's schema) gets the merchant's id, `livemode`
    false, the status the type names (`payment.failed` -> "failed") and no secret.
    """
    obj = copy.deepcopy(definition.object_schema["examples"][0])
    assert isinstance(obj, dict), definition.entry.name
    if "merchant_id" in obj:
        obj["merchant_id"] = merchant_id
    if "livemode" in obj:
        obj["livemode"] = False
    if "status" in obj:
        obj["status"] = definition.entry.name.rsplit(".", 1)[1]
    for member in _SECRET_MEMBERS:
        if member in obj:
            obj[member] = ""
    return obj
