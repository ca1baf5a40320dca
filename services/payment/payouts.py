"""Payouts: money sent from a merchant's available balance to its bank account.

One state machine (`MOVES`, `move`): `pending` → `in_transit` → `paid` / `failed`, and
`pending` → `canceled`. Every move writes its event in the same transaction.

The ledger (services/payment/ledger.py has the postings) is told by the worker, never inside
an open transaction: a payout's creation (available → payouts in transit) is posted before it
goes `in_transit`; `paid` / `failed` are posted before the move; a cancel moves at once and the
worker posts the creation (if it was not) and its reversal after, then sets `ledger_complete`.
Every posting is idempotent by reference, so a worker may repeat any step after a crash.

The available balance is the ledger's; a payout is accepted when its amount is at most the
available balance less the merchant's `pending` payouts (whose creation may not be posted yet),
checked under the merchant's payout account row lock, so two payouts cannot both take the same
funds. A payout whose creation was posted but not yet recorded counts twice for a moment: the
check can only refuse too much, never accept too much.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from services.common import pages
from services.common.auth import Principal
from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.common.money import normalize_currency
from services.common.rest_json import message_to_json
from services.common.settings import Settings
from services.payment import outbox
from services.payment.errors import (
    InsufficientAvailableBalance,
    NoBankAccount,
    PayoutNotFound,
    PayoutStateInvalid,
)
from services.payment.models import PAYOUT_SCHEDULES, PAYOUT_STATUSES, Payout, PayoutAccount
from services.payment.validation import amount_violations, metadata_violations, validate_choice
from services.payment.views import payout_to_proto

PROCESS_PAYOUT = "services.payment.payout_jobs.process_payout"
DESCRIPTION_LENGTH_MAX = 1000
BANK_ACCOUNT_DIGITS_MIN = 4
BANK_ACCOUNT_DIGITS_MAX = 34
SETTLEMENT_DELAY_S_MAX = 30 * 24 * 3600

# The allowed moves and the event each one writes.
MOVES: dict[tuple[str, str], str] = {
    ("pending", "in_transit"): "payout.updated",
    ("pending", "canceled"): "payout.canceled",
    ("in_transit", "paid"): "payout.paid",
    ("in_transit", "failed"): "payout.failed",
}
FINAL_STATUSES = frozenset({"paid", "failed", "canceled"})


def settlement_delay_s(settings: Settings, account: PayoutAccount | None, *, livemode: bool) -> int:
    """How long a merchant's captured funds stay pending (its own delay, or the mode's)."""
    if account is not None and account.settlement_delay_s is not None:
        return account.settlement_delay_s
    return int(
        settings.payout_settlement_delay_live_s
        if livemode
        else settings.payout_settlement_delay_test_s
    )


def validate_payout_input(
    *, amount: int, currency: str, description: str, metadata: dict[str, str]
) -> str:
    """The payout's currency normalized, or InvalidArgument listing every fault."""
    violations = amount_violations(amount)
    code = normalize_currency(currency) if currency else None
    if code is None:
        violations.append(FieldViolation("currency", "must be an ISO 4217 currency code"))
    if len(description) > DESCRIPTION_LENGTH_MAX:
        violations.append(
            FieldViolation("description", f"must be at most {DESCRIPTION_LENGTH_MAX} characters")
        )
    violations += metadata_violations(metadata)
    if violations or code is None:
        raise InvalidArgument("the payout is invalid", violations=violations)
    return code


def validate_settings_input(
    *, bank_account_number: str | None, schedule: str | None, settlement_delay_s: int | None
) -> None:
    """InvalidArgument listing every fault of a payout settings change (None: not sent)."""
    violations: list[FieldViolation] = []
    if bank_account_number is not None and not (
        bank_account_number.isascii()
        and bank_account_number.isdigit()
        and BANK_ACCOUNT_DIGITS_MIN <= len(bank_account_number) <= BANK_ACCOUNT_DIGITS_MAX
    ):
        violations.append(
            FieldViolation(
                "bank_account_number",
                f"must be {BANK_ACCOUNT_DIGITS_MIN} to {BANK_ACCOUNT_DIGITS_MAX} digits",
            )
        )
    if schedule is not None and schedule not in PAYOUT_SCHEDULES:
        violations.append(FieldViolation("schedule", "must be one of automatic, manual"))
    if settlement_delay_s is not None and not 0 <= settlement_delay_s <= SETTLEMENT_DELAY_S_MAX:
        violations.append(
            FieldViolation("settlement_delay_s", f"must be between 0 and {SETTLEMENT_DELAY_S_MAX}")
        )
    if violations:
        raise InvalidArgument("the payout settings are invalid", violations=violations)


def get_account(
    session: Session, *, merchant_id: str, livemode: bool, for_update: bool = False
) -> PayoutAccount | None:
    """The merchant's payout account in a mode, if it set one."""
    return session.get(PayoutAccount, (merchant_id, livemode), with_for_update=for_update)


def update_account(
    session: Session,
    *,
    principal: Principal,
    bank_account_number: str | None,
    schedule: str | None,
    settlement_delay_s: int | None,
) -> PayoutAccount:
    """Sets the fields sent of the caller's payout account, creating it (manual schedule)."""
    validate_settings_input(
        bank_account_number=bank_account_number,
        schedule=schedule,
        settlement_delay_s=settlement_delay_s,
    )
    account = get_account(
        session, merchant_id=principal.merchant_id, livemode=principal.livemode, for_update=True
    )
    if account is None:
        account = PayoutAccount(
            merchant_id=principal.merchant_id,
            livemode=principal.livemode,
            bank_account_number="",
            schedule="manual",
        )
        session.add(account)
    if bank_account_number is not None:
        account.bank_account_number = bank_account_number
    if schedule is not None:
        account.schedule = schedule
    if settlement_delay_s is not None:
        account.settlement_delay_s = settlement_delay_s
    session.flush()
    return account


def reserved(session: Session, *, merchant_id: str, livemode: bool, currency: str) -> int:
    """The amount of the merchant's `pending` payouts in a currency."""
    total = session.scalar(
        select(func.coalesce(func.sum(Payout.amount), 0)).where(
            Payout.merchant_id == merchant_id,
            Payout.livemode == livemode,
            Payout.currency == currency,
            Payout.status == "pending",
        )
    )
    return int(total or 0)


def payout_event(session: Session, payout: Payout, event_type: str) -> None:
    """Writes `payout.<...>` with the payout as it is now (flushed so times are set)."""
    session.flush()
    outbox.add_event(
        session,
        event_type=event_type,
        merchant_id=payout.merchant_id,
        livemode=payout.livemode,
        obj=message_to_json(payout_to_proto(payout)),
    )


def drive(session: Session, payout: Payout) -> None:
    """Asks a worker to carry the payout on; each drive has its own job id."""
    payout.drive_count += 1
    payout.drive_time = datetime.now(UTC)
    outbox.add_job(
        session,
        func=PROCESS_PAYOUT,
        job_id=f"payout-{payout.id}-process-{payout.drive_count}",
        args=[payout.id],
    )


def create_payout(
    session: Session,
    *,
    merchant_id: str,
    livemode: bool,
    available: int,
    amount: int,
    currency: str,
    method: str,
    description: str = "",
    metadata: dict[str, str] | None = None,
) -> Payout:
    """Records a pending payout of validated input and asks a worker to send it.

    `available` is the ledger's available balance, read after the payout account's row lock
    was taken (`get_account(for_update=True)`), which serializes a merchant's payouts.
    """
    assert amount > 0, "payout amounts are validated before this point"
    account = get_account(session, merchant_id=merchant_id, livemode=livemode, for_update=True)
    if account is None or not account.bank_account_number:
        raise NoBankAccount("set a bank account first (POST /v1/account/payout_settings)")
    payable = available - reserved(
        session, merchant_id=merchant_id, livemode=livemode, currency=currency
    )
    if amount > payable:
        raise InsufficientAvailableBalance(
            f"at most {max(payable, 0)} {currency} is available to pay out",
            violations=[FieldViolation("amount", f"must be at most {max(payable, 0)}")],
            metadata={"available": str(max(payable, 0))},
        )
    payout = Payout(
        id=new_id("po"),
        merchant_id=merchant_id,
        livemode=livemode,
        amount=amount,
        currency=currency,
        status="pending",
        method=method,
        description=description,
        metadata_=dict(metadata or {}),
        bank_account_number=account.bank_account_number,
        failure_code="",
        ledger_complete=False,
        drive_count=0,
    )
    session.add(payout)
    drive(session, payout)
    payout_event(session, payout, "payout.created")
    return payout


def move(session: Session, payout: Payout, status: str, *, failure_code: str = "") -> None:
    """Moves a locked payout to `status` and writes the move's event; refuses other moves."""
    event_type = MOVES.get((payout.status, status))
    if event_type is None:
        raise PayoutStateInvalid(
            f"a payout in status {payout.status!r} cannot become {status!r}",
            metadata={"status": payout.status},
        )
    payout.status = status
    if failure_code:
        payout.failure_code = failure_code
    if status in FINAL_STATUSES:
        payout.finish_time = datetime.now(UTC)
    payout_event(session, payout, event_type)


def get_payout_or_raise(
    session: Session, *, principal: Principal, payout_id: str, for_update: bool = False
) -> Payout:
    """The caller's payout, or PayoutNotFound (also for another merchant's or mode's)."""
    payout = (
        session.get(Payout, payout_id, with_for_update=for_update)
        if has_prefix(payout_id, "po")
        else None
    )
    if (
        payout is None
        or payout.merchant_id != principal.merchant_id
        or payout.livemode != principal.livemode
    ):
        raise PayoutNotFound(f"no such payout: {payout_id!r}")
    return payout


def cancel_payout(session: Session, *, principal: Principal, payout_id: str) -> Payout:
    """Cancels the caller's pending payout; a worker returns its funds to the balance."""
    payout = get_payout_or_raise(session, principal=principal, payout_id=payout_id, for_update=True)
    if payout.status != "pending":
        raise PayoutStateInvalid(
            f"a payout in status {payout.status!r} cannot be canceled",
            metadata={"status": payout.status},
        )
    move(session, payout, "canceled")
    drive(session, payout)
    return payout


def list_payouts(
    session: Session,
    *,
    principal: Principal | None,
    tokens: pages.PageTokens,
    page_size: int,
    page_token: str,
    status: str = "",
    merchant_id: str = "",
    created: pages.CreatedRange = pages.ANY_TIME,
) -> tuple[list[Payout], str]:
    """A page of payouts, newest first: the caller's, or (operators) all or one merchant's."""
    size = pages.page_size(page_size)
    validate_choice(status, PAYOUT_STATUSES, "status")
    scope: pages.Scope = {
        "merchant_id": principal.merchant_id if principal else merchant_id,
        "livemode": principal.livemode if principal else None,
        "status": status,
        **created.scope(),
    }
    query = select(Payout).where(*created.where(Payout.create_time))
    if principal is not None:
        query = query.where(
            Payout.merchant_id == principal.merchant_id, Payout.livemode == principal.livemode
        )
    elif merchant_id:
        query = query.where(Payout.merchant_id == merchant_id)
    if status:
        query = query.where(Payout.status == status)
    position = tokens.open_after(page_token, list_name="payouts", scope=scope)
    if position is not None:
        query = query.where(tuple_(Payout.create_time, Payout.id) < tuple_(*position))
    rows = list(
        session.scalars(query.order_by(Payout.create_time.desc(), Payout.id.desc()).limit(size + 1))
    )
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = tokens.seal_after(
            rows[-1].create_time, rows[-1].id, list_name="payouts", scope=scope
        )
    return rows, next_token
