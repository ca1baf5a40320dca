"""Account kinds for settlement and payouts.

Revision ID: ledger_0002
Revises: ledger_0001
Create Date: 2026-12-06

`merchant_pending` (captured, not yet available), `payouts_in_transit` (paid out, not yet
landed at the merchant's bank) and `platform_cash` (the platform's bank account, which payouts
are paid from) join the known kinds.
"""

from alembic import op

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None

_KNOWN = "'processor_receivable', 'platform_fees', 'merchant_balance'"
_NEW = "'merchant_pending', 'payouts_in_transit', 'platform_cash'"


def upgrade() -> None:
    """Widens the accounts' kind check."""
    op.drop_constraint("ck_accounts_kind_known", "accounts")
    op.create_check_constraint("ck_accounts_kind_known", "accounts", f"kind IN ({_KNOWN}, {_NEW})")


def downgrade() -> None:
    """Narrows the check back (fails while accounts of the new kinds exist)."""
    op.drop_constraint("ck_accounts_kind_known", "accounts")
    op.create_check_constraint("ck_accounts_kind_known", "accounts", f"kind IN ({_KNOWN})")
