"""Secrets hygiene: no API key, webhook secret, card number or cvc in the database or the logs.

A workload that handles every kind of secret runs first (keys of both kinds and modes, every
test card with its cvc, a confirm with a publishable key, a webhook endpoint, a rotation, signed
deliveries, a revoked key tried again); then every text and JSON column of every schema, and
every log file of the platform, is searched for the exact secrets seen and for anything shaped
like one. Keys are stored as SHA-256 hashes and webhook secrets encrypted, so neither pattern
can match a legitimate column. Whatever ran earlier in the session on the platform is searched
too.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import transaction
from services.payment.processor import SCENARIOS
from services.runtime.platform import LocalPlatform
from tests.integration.test_payments import card, created, wait_for
from tests.integration.webhook_receiver import Receiver, create_endpoint

CARDS = ["4242424242424242", "5555555555554444", *SCENARIOS]
CVC = "739"
PATTERNS = {
    "api key": re.compile(r"\b(?:sk|pk)_(?:test|live)_[A-Za-z0-9]{38}\b"),
    "webhook secret": re.compile(r"whsec_[A-Za-z0-9+/=_-]{16,}"),
    "card number": re.compile("|".join(CARDS)),
    "cvc field": re.compile(r"[\"']cvc[\"']\s*:"),
}
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


def _run_workload(api: httpx.Client, sessions: sessionmaker[Session]) -> list[str]:
    """Handles every kind of secret through the edge; returns the secrets it saw."""
    with transaction(sessions) as session:
        made = merchants.create_merchant(session, name="Hygiene Shop")
        issued = {
            (mode, kind): merchants.create_api_key(
                session,
                merchant_id=made.id,
                mode=mode,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
            )
            for mode in ("test", "live")
            for kind in ("secret", "publishable")
        }
    secret_key = issued["test", "secret"].key
    publishable_key = issued["test", "publishable"].key
    seen = [item.key for item in issued.values()]
    with Receiver().running() as receiver:
        endpoint = create_endpoint(api, secret_key, receiver.url("/hygiene"), ["*"])
        seen.append(str(endpoint["secret"]))
        rotated = api.post(
            f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
            json={},
            headers={"X-API-Key": secret_key},
        )
        assert rotated.status_code == 200, rotated.text
        seen.append(rotated.json()["secret"])
        for number in CARDS:
            payment = created(
                api, secret_key, payment_method={"card": card(number, cvc=CVC)}, amount=1500
            )
            if payment["status"] == "requires_action":
                # A 3-D Secure card: the challenge answered as the checkout page does.
                answered = api.post(
                    f"/v1/payments/{payment['id']}/authenticate",
                    json={"client_secret": payment["client_secret"], "result": "complete"},
                )
                assert answered.status_code == 200, answered.text
            wait_for(api, secret_key, payment["id"], timeout_s=120)
        waiting = created(api, secret_key, amount=700)
        confirmed = api.post(
            f"/v1/payments/{waiting['id']}/confirm",
            json={"client_secret": waiting["client_secret"], "payment_method": {"card": card()}},
            headers={"X-API-Key": publishable_key},
        )
        assert confirmed.status_code == 200, confirmed.text
        receiver.wait_for("/hygiene", 3, timeout_s=120)
    with transaction(sessions) as session:
        merchants.revoke_api_key(session, key_id=issued["live", "secret"].api_key.id)
    for key in seen[:4]:
        api.get("/v1/payments", headers={"X-API-Key": key})
    return seen


def _database_findings(url: str, secrets: list[str]) -> list[str]:
    findings: list[str] = []
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        columns = connection.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND data_type = ANY(%s)",
            (list(TEXT_TYPES),),
        ).fetchall()
        assert len(columns) > 20, columns
        for schema, table, column in columns:
            rows = connection.execute(
                f'SELECT "{column}"::text FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL'  # noqa: S608 - names from the catalog
            ).fetchall()
            for (value,) in rows:
                findings.extend(
                    f"{schema}.{table}.{column}: {what}" for what in _matches(value, secrets)
                )
    return findings


def _matches(text: str, secrets: list[str]) -> list[str]:
    found = [name for name, pattern in PATTERNS.items() if pattern.search(text)]
    found.extend("a secret seen in the workload" for secret in secrets if secret in text)
    return found


def test_no_secret_is_stored_or_logged_in_the_clear(
    platform: LocalPlatform, api: httpx.Client, sessions: sessionmaker[Session]
) -> None:
    secrets = _run_workload(api, sessions)
    assert len(secrets) == 6
    url = platform.settings.require_database_url()
    findings = _database_findings(url, secrets)
    logs = sorted(Path(platform.log_dir).glob("*.log"))
    assert logs, platform.log_dir
    for log in logs:
        text = log.read_text(errors="replace")
        findings.extend(f"{log.name}: {what}" for what in _matches(text, secrets))
    assert not findings, findings
