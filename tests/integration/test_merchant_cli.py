"""`paymesh trigger` against the live platform, as an integrator runs it (issue 15, point 5)."""

from __future__ import annotations

import re

import httpx
import pytest

from services.runtime import cli, merchant_cli
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys


def _trigger(
    capsys: pytest.CaptureFixture[str], platform: LocalPlatform, key: str, event_type: str
) -> tuple[int, str, str]:
    code = cli.main(["trigger", event_type, "--url", platform.base_url, "--api-key", key])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("event_type", sorted(merchant_cli.FIXTURES))
def test_trigger__causes_the_event_and_prints_its_id(
    event_type: str,
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
) -> None:
    code, out, err = _trigger(capsys, platform, merchant.secret_key, event_type)
    assert code == 0, err
    match = re.search(rf"event (evt_\w+) \({re.escape(event_type)}\) published", out)
    assert match, out
    event = api.get(f"/v1/events/{match[1]}", headers={"X-API-Key": merchant.secret_key})
    assert event.status_code == 200, event.text
    assert event.json()["type"] == event_type
    assert event.json()["livemode"] is False
    # The object it made is the merchant's, in test mode, and named in the output.
    assert event.json()["data"]["object"]["id"] in out


def test_trigger__refuses_what_it_cannot_do_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
) -> None:
    headers = {"X-API-Key": merchant.secret_key}
    code, _, err = _trigger(capsys, platform, merchant.secret_key, "payment.exploded")
    assert code == 1 and "cannot trigger 'payment.exploded'" in err
    code, _, err = _trigger(capsys, platform, "sk_test_" + "x" * 32, "payment.succeeded")
    assert code == 1 and "401" in err, err
    # A publishable key, or a live one, is refused before any call.
    code, _, err = _trigger(capsys, platform, merchant.publishable_key, "payment.succeeded")
    assert code == 2 and "test-mode secret key" in err
    code = cli.main(["trigger", "payment.succeeded", "--url", "http://127.0.0.1:9"])
    assert code == 2
    assert api.get("/v1/payments", headers=headers).json().get("payments", []) == []
