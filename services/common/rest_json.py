"""A message as REST clients see it, for the JSON that services write themselves.

The edge prints responses from the protos (Envoy's transcoder, then envoy/edge.lua): proto
field names, every field, and 64-bit integers as JSON numbers. Event payloads (`data.object`)
are printed here, in the same shape, so that a webhook's object is what a GET of it answers.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}


def message_to_json(message: Message) -> dict[str, Any]:
    """The message's JSON object, as the edge prints it."""
    printed = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(message.DESCRIPTOR, printed)
    return printed


def _numbers(descriptor: Any, printed: dict[str, Any]) -> None:
    """Turns the 64-bit integers that MessageToDict prints as strings back into ints."""
    if descriptor.full_name.startswith("google.protobuf."):
        return  # well-known types print as their own JSON (a Timestamp is a string)
    for field in descriptor.fields:
        if field.name not in printed:
            continue
        value = printed[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = list(value.items())
            for key, item in items:
                value[key] = _converted(value_field, item)
        elif field.is_repeated:
            printed[field.name] = [_converted(field, item) for item in value]
        else:
            printed[field.name] = _converted(field, value)


def _converted(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64 and isinstance(value, str):
        return int(value)
    if field.message_type is not None and isinstance(value, dict):
        _numbers(field.message_type, value)
    return value
