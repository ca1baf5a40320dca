"""The event type catalog (protos/paymesh/webhook/v1/event_types.proto, read by
services/webhook/catalog.py): defined once in the contracts, covering every type the services
publish, with generated object schemas that real API objects validate against; `enabled_events`
is checked against it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from jsonschema import Draft202012Validator
from paymesh.ledger.v1 import ledger_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.webhook.v1 import webhook_pb2

from services.common.errors import InvalidArgument
from services.common.rest_json import message_to_json
from services.webhook import catalog, events
from services.webhook.endpoints import normalize_events

ROOT = Path(__file__).resolve().parents[3]
# Where the publishers name the types of the events they write.
PUBLISHERS = [ROOT / "services" / "payment", ROOT / "services" / "webhook"]


def _published_literals() -> set[str]:
    """String literals in the publishers that look like an event type of a catalog object."""
    objects = {name.split(".")[0] for name in catalog.names()}
    found: set[str] = set()
    for folder in PUBLISHERS:
        for path in folder.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    continue
                if events.EVENT_TYPE_PATTERN.match(node.value) and (
                    node.value.split(".")[0] in objects
                ):
                    found.add(node.value)
    return found


def _schemas() -> dict[str, Draft202012Validator]:
    return {
        definition.entry.name: Draft202012Validator(definition.object_schema)
        for definition in catalog.load_definitions()
    }


def test_catalog__lists_the_platforms_event_types_once_each() -> None:
    names = [entry.name for entry in catalog.entries()]
    assert names == [
        "payment.processing",
        "payment.requires_capture",
        "payment.succeeded",
        "payment.failed",
        "payment.canceled",
        "refund.succeeded",
        "refund.failed",
        "webhook_endpoint.disabled",
        "payment.requires_action",
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "payment_method.attached",
        "payment_method.detached",
        "dispute.created",
        "dispute.updated",
        "dispute.closed",
        "dispute.funds_withdrawn",
        "dispute.funds_reinstated",
        "payout.created",
        "payout.updated",
        "payout.paid",
        "payout.failed",
        "payout.canceled",
        "balance.available",
    ]
    for name in names:
        events.validate_event_type(name, field="type")


def test_catalog__every_type_a_publisher_names_is_listed_and_every_listed_type_is_published() -> (
    None
):
    assert _published_literals() == catalog.names()


def test_catalog__each_object_type_is_a_message_of_the_contracts() -> None:
    pool = descriptor_pool.Default()
    expected = {
        "payment": payment_pb2.Payment.DESCRIPTOR.full_name,
        "refund": payment_pb2.Refund.DESCRIPTOR.full_name,
        "webhook_endpoint": webhook_pb2.WebhookEndpoint.DESCRIPTOR.full_name,
        "customer": payment_pb2.Customer.DESCRIPTOR.full_name,
        "payment_method": payment_pb2.SavedPaymentMethod.DESCRIPTOR.full_name,
        "dispute": payment_pb2.Dispute.DESCRIPTOR.full_name,
        "payout": payment_pb2.Payout.DESCRIPTOR.full_name,
        "balance": ledger_pb2.Balance.DESCRIPTOR.full_name,
    }
    for entry in catalog.entries():
        assert pool.FindMessageTypeByName(entry.object_type)
        assert entry.object_type == expected[entry.name.split(".")[0]], entry.name
        assert entry.description.endswith("."), entry.name


def test_generated_file__matches_the_contracts_and_holds_valid_schemas() -> None:
    definitions = catalog.load_definitions()
    assert [definition.entry for definition in definitions] == list(catalog.entries())
    for definition in definitions:
        Draft202012Validator.check_schema(definition.object_schema)
        descriptor = descriptor_pool.Default().FindMessageTypeByName(definition.entry.object_type)
        properties = definition.object_schema["properties"]
        assert set(properties) == {field.name for field in descriptor.fields}
    payment = definitions[0].object_schema
    # REST prints 64-bit integers as JSON numbers (docs/api.md, Amounts).
    assert payment["properties"]["amount"]["type"] == "integer"
    assert payment["properties"]["card"]["$ref"] == "#/$defs/payment.v1.CardDetails"


def test_generated_file__stale_or_missing_is_refused(tmp_path: Path) -> None:
    listed = json.loads(catalog.DEFINITIONS.read_text())
    listed["event_types"] = listed["event_types"][:-1]
    stale = tmp_path / "event_types.json"
    stale.write_text(json.dumps(listed))
    with pytest.raises(RuntimeError, match="make gen"):
        catalog.load_definitions(stale)
    with pytest.raises(RuntimeError, match="make gen"):
        catalog.load_definitions(tmp_path / "missing.json")


def test_schemas__validate_objects_as_the_api_prints_them() -> None:
    schemas = _schemas()
    payment = payment_pb2.Payment(
        id="pay_1",
        amount=2**40,
        currency="EUR",
        status="succeeded",
        amount_received=2**40,
        metadata={"order": "42"},
    )
    payment.card.last4 = "4242"
    payment.create_time.GetCurrentTime()
    printed = message_to_json(payment)
    assert isinstance(printed["amount"], int)
    for name in ("payment.succeeded", "payment.failed"):
        schemas[name].validate(printed)
    refund = message_to_json(payment_pb2.Refund(id="re_1", amount=500, payment_id="pay_1"))
    schemas["refund.succeeded"].validate(refund)
    endpoint = webhook_pb2.WebhookEndpoint(id="we_1", url="https://example.com", status="disabled")
    schemas["webhook_endpoint.disabled"].validate(
        {"object": "webhook_endpoint", **message_to_json(endpoint)}
    )


def test_schemas__refuse_an_object_of_another_shape() -> None:
    schemas = _schemas()
    printed = message_to_json(payment_pb2.Payment(id="pay_1", amount=100))
    assert not schemas["payment.succeeded"].is_valid({**printed, "amount": "100"})
    without_id = {key: value for key, value in printed.items() if key != "id"}
    assert not schemas["payment.succeeded"].is_valid(without_id)


def test_enabled_events__catalog_types_and_star_are_taken() -> None:
    assert normalize_events(["refund.failed", "payment.succeeded", "refund.failed"]) == [
        "refund.failed",
        "payment.succeeded",
    ]
    assert normalize_events(["payment.succeeded", "*"]) == ["*"]


@pytest.mark.parametrize(
    "values",
    [["payment.succeded"], ["payment.succeeded", "payment.created"], ["*", "refund.done"]],
)
def test_enabled_events__an_unknown_type_is_refused_by_name(values: list[str]) -> None:
    with pytest.raises(InvalidArgument) as refused:
        normalize_events(values)
    unknown = next(value for value in values if value != "*" and value not in catalog.names())
    assert [(v.field, unknown in v.description) for v in refused.value.violations] == [
        ("enabled_events", True)
    ]


@pytest.mark.parametrize("definition", catalog.load_definitions(), ids=lambda d: d.entry.name)
def test_test_object__is_a_valid_test_mode_object_of_the_type_without_secrets(
    definition: catalog.EventTypeDefinition,
) -> None:
    obj = catalog.test_object(definition, merchant_id="mer_test")
    Draft202012Validator(definition.object_schema).validate(obj)
    if "status" in definition.object_schema["properties"]:
        assert obj["status"] == definition.entry.name.rsplit(".", 1)[1]
    else:
        # Customers, payment methods and the balance have no status: their event's verb is
        # no state.
        assert definition.entry.object_type in {
            "paymesh.payment.v1.Customer",
            "paymesh.payment.v1.SavedPaymentMethod",
            "paymesh.ledger.v1.Balance",
        }, definition.entry.name
    assert obj["livemode"] is False
    assert obj.get("merchant_id", "mer_test") == "mer_test"
    assert not obj.get("client_secret") and not obj.get("secret")
    # The catalog's own example is left as it is.
    assert definition.object_schema["examples"][0] is not obj
