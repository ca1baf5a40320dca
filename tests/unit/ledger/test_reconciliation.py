"""Reconciliation's comparison of the three sides, without any service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.ledger.accounts import CurrencyTotals
from services.ledger.reconciliation import (
    LedgerView,
    Movement,
    ProcessorRecord,
    Report,
    compare,
    expected_legs,
)

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=1)
NOON = START + timedelta(hours=12)


def payment(pid: str, amount: int, fee: int, *, at: datetime = NOON) -> Movement:
    return Movement(
        "payment", pid, pid, "mer_a", amount, fee, "USD", False, at, f"payment:{pid}:capture"
    )


def refund(rid: str, pid: str, amount: int) -> Movement:
    return Movement("refund", rid, pid, "mer_a", amount, 0, "USD", False, NOON, f"refund:{rid}")


def capture_record(pid: str, amount: int) -> ProcessorRecord:
    return ProcessorRecord("capture", f"ch_{pid}", pid, "", amount, "USD", NOON)


def refund_record(rid: str, pid: str, amount: int) -> ProcessorRecord:
    return ProcessorRecord("refund", f"rf_{rid}", pid, rid, amount, "USD", NOON)


def view_of(movement: Movement, tid: str, *, at: datetime = NOON) -> LedgerView:
    return LedgerView(
        tid, movement.ledger_reference, movement.id, False, at, expected_legs(movement)
    )


def run(movements, records, ledger, trial=None) -> Report:  # type: ignore[no-untyped-def]
    return compare(
        start=START,
        end=END,
        movements=movements,
        records=records,
        ledger=ledger,
        trial_balance=trial or [CurrencyTotals("USD", 10, 10)],
    )


def test_clean_books_have_no_mismatch_and_add_up() -> None:
    paid, back = payment("pay_1", 1000, 30), refund("re_1", "pay_1", 400)
    report = run(
        [paid, back],
        [capture_record("pay_1", 1000), refund_record("re_1", "pay_1", 400)],
        [view_of(paid, "ltx_1"), view_of(back, "ltx_2")],
    )
    assert report.mismatches == []
    (usd,) = report.totals
    assert (usd.payments_captured, usd.payments_fees, usd.payments_refunded) == (1000, 30, 400)
    assert (usd.ledger_receivable_net, usd.ledger_fees, usd.ledger_merchant_net) == (600, 30, 570)
    assert report.checked_count == 4


def test_fee_free_and_fee_only_captures_leave_zero_legs_out() -> None:
    assert len(expected_legs(payment("p", 100, 0))) == 2
    assert len(expected_legs(payment("p", 100, 100))) == 2


def test_missing_duplicate_and_amount_mismatches_carry_ids() -> None:
    lost, doubled, wrong = payment("pay_l", 10, 1), payment("pay_d", 20, 2), payment("pay_w", 30, 3)
    bad = LedgerView(
        "ltx_w",
        wrong.ledger_reference,
        wrong.id,
        False,
        NOON,
        expected_legs(payment("pay_w", 31, 3)),
    )
    duplicate = LedgerView("ltx_d2", "manual", doubled.id, False, NOON, expected_legs(doubled))
    report = run(
        [lost, doubled, wrong],
        [capture_record(m.id, m.amount) for m in (lost, doubled, wrong)],
        [view_of(doubled, "ltx_d1"), duplicate, bad],
    )
    found = {(m.kind, tuple(m.ids)) for m in report.mismatches}
    assert ("MISSING_LEDGER_TRANSACTION", ("pay_l", "pay_l", "mer_a")) in found
    assert ("DUPLICATE_LEDGER_TRANSACTION", ("pay_d", "ltx_d1", "ltx_d2")) in found
    assert ("AMOUNT_MISMATCH", ("pay_w", "ltx_w", "mer_a")) in found


def test_transaction_of_a_movement_settling_after_the_range_is_not_unexpected() -> None:
    late = payment("pay_late", 50, 5, at=END + timedelta(seconds=1))
    report = run(
        [late],
        [capture_record("pay_late", 50)],
        [view_of(late, "ltx_late", at=END - timedelta(seconds=1))],
    )
    assert report.mismatches == []


def test_a_transaction_no_movement_explains_is_unexpected() -> None:
    stray = LedgerView("ltx_x", "manual:1", "", False, NOON, expected_legs(payment("x", 9, 1)))
    report = run([], [], [stray])
    kinds = sorted((m.kind, m.ids[0]) for m in report.mismatches)
    assert kinds == [
        ("MERCHANT_BALANCE_MISMATCH", "mer_a"),
        ("UNEXPECTED_LEDGER_TRANSACTION", "ltx_x"),
    ]


def test_processor_disagreement_both_ways() -> None:
    paid = payment("pay_1", 1000, 30)
    report = run(
        [paid],
        [capture_record("pay_1", 999), capture_record("pay_ghost", 5)],
        [view_of(paid, "ltx_1")],
    )
    processor = [m for m in report.mismatches if m.kind == "PROCESSOR_MISMATCH"]
    assert {(m.ids[1], m.expected, m.actual) for m in processor} == {
        ("pay_1", 999, 1000),
        ("pay_ghost", 5, 0),
    }
    unrecorded = run([paid], [], [view_of(paid, "ltx_1")])
    assert [m.kind for m in unrecorded.mismatches] == ["PROCESSOR_MISMATCH"]


def test_unbalanced_trial_balance_is_reported() -> None:
    report = run([], [], [], trial=[CurrencyTotals("EUR", 5, 4)])
    assert [(m.kind, m.currency, m.expected, m.actual) for m in report.mismatches] == [
        ("TRIAL_BALANCE_UNBALANCED", "EUR", 5, 4)
    ]


def _step(kind: str, ident: str, amount: int, reference: str) -> Movement:
    return Movement(kind, ident, "", "mer_a", amount, 0, "USD", False, NOON, reference)


def _view(movement: Movement, tid: str, source: str) -> LedgerView:
    return LedgerView(tid, movement.ledger_reference, source, False, NOON, expected_legs(movement))


def test_release_and_payout_steps_reconcile_against_the_bank() -> None:
    paid = payment("pay_1", 1000, 30)
    release = _step("release", "pay_1", 970, "payment:pay_1:available")
    created = _step("payout", "po_1", 900, "payout:po_1")
    landed = _step("payout_paid", "po_1", 900, "payout:po_1:paid")
    transfer = ProcessorRecord("payout_paid", "bt_1", "po_1", "", 900, "USD", NOON)
    ledger = [
        view_of(paid, "ltx_1"),
        _view(release, "ltx_2", ""),
        _view(created, "ltx_3", "po_1"),
        _view(landed, "ltx_4", "po_1"),
    ]
    movements = [paid, release, created, landed]
    clean = run(movements, [capture_record("pay_1", 1000), transfer], ledger)
    assert clean.mismatches == []
    # The merchant's money moved by what was captured less fees and paid out.
    assert clean.totals[0].ledger_merchant_net == 970 - 900

    no_transfer = run(movements, [capture_record("pay_1", 1000)], ledger)
    assert [(m.kind, m.ids) for m in no_transfer.mismatches] == [
        ("BANK_MISMATCH", ["po_1", "mer_a"])
    ]
    other_amount = ProcessorRecord("payout_paid", "bt_1", "po_1", "", 901, "USD", NOON)
    wrong = run(movements, [capture_record("pay_1", 1000), other_amount], ledger)
    assert [m.kind for m in wrong.mismatches] == ["BANK_MISMATCH"]
    unposted = run(movements, [capture_record("pay_1", 1000), transfer], ledger[:3])
    assert {m.kind for m in unposted.mismatches} == {
        "MISSING_LEDGER_TRANSACTION",
        "MERCHANT_BALANCE_MISMATCH",
    }


def test_a_capture_posted_before_pending_balances_still_reconciles() -> None:
    paid = payment("pay_old", 1000, 30)
    legacy = {
        (owner, "merchant_balance" if kind == "merchant_pending" else kind, side, code): amount
        for (owner, kind, side, code), amount in expected_legs(paid).items()
    }
    old = LedgerView("ltx_1", paid.ledger_reference, paid.id, False, NOON, legacy)
    assert run([paid], [capture_record("pay_old", 1000)], [old]).mismatches == []
    # Once its funds were released the pending leg is the rule.
    release = _step("release", "pay_old", 970, "payment:pay_old:available")
    report = run(
        [paid, release], [capture_record("pay_old", 1000)], [old, _view(release, "ltx_2", "")]
    )
    assert "AMOUNT_MISMATCH" in {m.kind for m in report.mismatches}
