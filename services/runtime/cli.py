"""The `paymesh` command: run the platform, migrate, manage operators and merchants, and
cause test events (`paymesh trigger`, services/runtime/merchant_cli.py)."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import threading

import grpc

from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.errors import ConfigurationError
from services.common.logs import configure_logging
from services.common.settings import Settings
from services.runtime import merchant_cli, platform
from services.runtime.supervisor import Supervisor

logger = logging.getLogger(__name__)


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _banner(live: Settings, demo: dict[str, str]) -> str:
    base = live.public_url()
    return "\n".join(
        [
            "",
            f"paymesh is up on {base}",
            f"  REST API        {base}/v1/payments",
            f"  API reference   {base}/docs/ (OpenAPI: {base}/v1/openapi.json)",
            f"  dashboard       {base}/dashboard/ (operators)",
            f"  merchant        {base}/merchant/ (the demo merchant's own dashboard)",
            f"  checkout        {base}/checkout/<payment id>?client_secret=... (from checkout_url)",
            f"  demo shop       http://localhost:{live.demo_shop_port}/",
            f"  operator login  {demo['operator_email']} / {demo['operator_password']}",
            f"  merchant login  {demo['merchant_user_email']} / {demo['merchant_user_password']}",
            f"  demo merchant   {demo['merchant_id']}",
            f"  secret key      {demo['secret_key']}",
            f"  publishable key {demo['publishable_key']}",
            "",
            *(
                [
                    "Webhooks may be sent to private and loopback addresses (local demo):",
                    "  set PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS=false to refuse them.",
                    "",
                ]
                if live.webhook_allow_private_networks
                else []
            ),
            "Try it:",
            f"  curl -s {base}/v1/payments -H 'X-API-Key: {demo['secret_key']}' "
            "-H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' "
            '-d \'{"amount": 100, "currency": "INR"}\'',
            "",
            "Ctrl-C stops every process, embedded servers included.",
            "",
        ]
    )


def _announce(live: Settings, banner: str) -> None:
    """Prints the banner once every service answers health through the edge."""
    try:
        platform.wait_healthy(live, timeout_s=120)
    except (TimeoutError, RuntimeError) as error:
        _print(f"paymesh did not become healthy: {error}")
        return
    _print(banner)


def cmd_up(settings: Settings, _: argparse.Namespace) -> int:
    """Starts everything, prints how to use it, and stops everything on Ctrl-C.

    A process that dies is started again (see `services.runtime.supervisor`); one that keeps
    dying at start stops everything, and the exit status is then 1.
    """
    environment = platform.prepare(settings)
    # Local demos post webhooks to receivers on this machine; production refuses private
    # addresses (SSRF). An explicit setting in the environment wins.
    if "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS" not in os.environ:
        environment.variables["PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
    try:
        live = environment.settings()
        platform.migrate(live)
        demo = platform.ensure_demo_data(live)
        platform.write_envoy_config(live)
        supervisor = Supervisor(
            platform.processes(live), env={**os.environ, **environment.variables}
        )
        banner = _banner(live, demo)
        threading.Thread(target=_announce, args=(live, banner), daemon=True).start()
        return supervisor.run()
    finally:
        platform.stop_embedded(settings)


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    """Brings every schema up to date."""
    with platform.database(settings) as live:
        platform.migrate(live)
    _print("migrated")
    return 0


def cmd_operator_create(settings: Settings, args: argparse.Namespace) -> int:
    """Creates an operator (or resets its password and role)."""
    from services.admin import operators  # noqa: PLC0415

    with platform.database(settings) as live:
        platform.migrate(live)
        engine = make_engine(live.require_database_url(), pool_size=1)
        with transaction(make_sessionmaker(engine)) as session:
            operator = operators.create_operator(
                session, email=args.email, password=args.password, role=args.role
            )
            _print(json.dumps({"id": operator.id, "email": operator.email, "role": operator.role}))
        engine.dispose()
    return 0


def cmd_merchant_create(settings: Settings, args: argparse.Namespace) -> int:
    """Creates a merchant with test-mode secret and publishable keys."""
    from services.admin import merchants  # noqa: PLC0415

    with platform.database(settings) as live:
        platform.migrate(live)
        engine = make_engine(live.require_database_url(), pool_size=1)
        with transaction(make_sessionmaker(engine)) as session:
            merchant = merchants.create_merchant(session, name=args.name)
            secret = merchants.create_api_key(
                session, merchant_id=merchant.id, mode="test", kind="secret"
            )
            publishable = merchants.create_api_key(
                session, merchant_id=merchant.id, mode="test", kind="publishable"
            )
            result = {
                "merchant_id": merchant.id,
                "name": merchant.name,
                "secret_key": secret.key,
                "publishable_key": publishable.key,
            }
        engine.dispose()
    if args.json:
        _print(json.dumps(result))
    else:
        _print("\n".join(f"{name}: {value}" for name, value in result.items()))
    return 0


def cmd_merchant_invite(settings: Settings, args: argparse.Namespace) -> int:
    """Invites a person to a merchant's dashboard and prints the link that accepts it."""
    from services.admin import users  # noqa: PLC0415

    with platform.database(settings) as live:
        platform.migrate(live)
        engine = make_engine(live.require_database_url(), pool_size=1)
        with transaction(make_sessionmaker(engine)) as session:
            issued = users.invite(
                session,
                merchant_id=args.merchant,
                email=args.email,
                role=args.role,
                invited_by="cli",
                ttl_s=live.merchant_invite_ttl_s,
            )
            url = users.accept_url(live.public_url(), issued.token)
            result = {
                "invite_id": issued.invite.id,
                "email": issued.invite.email,
                "role": issued.invite.role,
                "accept_url": url,
            }
        engine.dispose()
    if args.json:
        _print(json.dumps(result))
    else:
        _print("\n".join(f"{name}: {value}" for name, value in result.items()))
    return 0


def _utc_time(text: str) -> datetime.datetime:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    value = datetime.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Reconciles the ledger for a range through the ledger service; exit 1 on mismatches."""
    from paymesh.ledger.v1 import (  # noqa: PLC0415
        ledger_internal_pb2,
        ledger_internal_pb2_grpc,
    )

    from services.common.clients import sync_channel  # noqa: PLC0415
    from services.common.rest_json import message_to_json  # noqa: PLC0415
    from services.ledger.reconciliation import render_text  # noqa: PLC0415

    request = ledger_internal_pb2.ReconcileRequest()
    request.start_time.FromDatetime(args.start)
    request.end_time.FromDatetime(args.end)
    with sync_channel(settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        try:
            report = stub.Reconcile(request, timeout=args.timeout_s)
        except grpc.RpcError as error:
            _print(f"reconciliation failed: {error.code().name}: {error.details()}")
            return 2
    if args.json:
        _print(json.dumps(message_to_json(report), indent=2))
    else:
        _print(render_text(report))
    return 1 if report.mismatches else 0


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    root = argparse.ArgumentParser(prog="paymesh", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the whole platform").set_defaults(func=cmd_up)
    commands.add_parser("migrate", help="migrate every schema").set_defaults(func=cmd_migrate)

    operator = commands.add_parser("operator", help="operator accounts")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    create_operator = operator_commands.add_parser("create", help="create an operator")
    create_operator.add_argument("--email", required=True)
    create_operator.add_argument("--password", required=True)
    create_operator.add_argument("--role", choices=["viewer", "operator"], default="operator")
    create_operator.set_defaults(func=cmd_operator_create)

    merchant = commands.add_parser("merchant", help="merchants")
    merchant_commands = merchant.add_subparsers(dest="merchant_command", required=True)
    create_merchant = merchant_commands.add_parser("create", help="create a merchant")
    create_merchant.add_argument("--name", required=True)
    create_merchant.add_argument("--json", action="store_true", help="print JSON")
    create_merchant.set_defaults(func=cmd_merchant_create)
    invite = merchant_commands.add_parser(
        "invite", help="invite a person to a merchant's dashboard (prints the link, once)"
    )
    invite.add_argument("--merchant", required=True, help="merchant id, mer_...")
    invite.add_argument("--email", required=True)
    invite.add_argument("--role", choices=["admin", "developer", "viewer"], default="admin")
    invite.add_argument("--json", action="store_true", help="print JSON")
    invite.set_defaults(func=cmd_merchant_invite)

    reconcile = commands.add_parser(
        "reconcile", help="check the ledger against payments and the processor (exit 1 if not)"
    )
    reconcile.add_argument("--start", required=True, type=_utc_time, help="ISO 8601, inclusive")
    reconcile.add_argument("--end", required=True, type=_utc_time, help="ISO 8601, exclusive")
    reconcile.add_argument("--json", action="store_true", help="print the report as JSON")
    reconcile.add_argument("--timeout-s", type=float, default=300.0, help="RPC deadline")
    reconcile.set_defaults(func=cmd_reconcile)
    merchant_cli.add_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paymesh` console script."""
    args = parser().parse_args(argv)
    if hasattr(args, "client_func"):
        # An integrator's command: it talks to a paymesh over HTTP, with no settings of its own.
        client_code: int = args.client_func(args)
        return client_code
    try:
        settings = Settings()
    except ConfigurationError as error:
        _print(f"paymesh: {error}")
        return 2
    configure_logging(service="cli", level="WARNING", json=False)
    code: int = args.func(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
