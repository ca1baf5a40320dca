"""Accounts, transactions, entries and balances, with the ledger's invariants as triggers.

Revision ID: ledger_0001
Revises:
Create Date: 2026-11-26

What the database itself refuses, whoever writes (the service, a script, a raw SQL session):
- a transaction whose debits and credits differ in any currency, or that has fewer than two
  entries (deferred constraint triggers, checked at COMMIT);
- entries added to a ledger transaction after the database transaction that created it;
- UPDATE, DELETE or TRUNCATE of entries and transactions (append-only);
- amounts that are not positive, entries whose currency is not their account's (composite FK);
- any write to `account_balances` except by the entry trigger, so the stored balance is the sum
  of the entries by construction; the trigger's upsert takes the row lock, so concurrent
  postings never lose an update.
Only a superuser (who can disable triggers) gets around these; the service's role must not be one.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "ledger_0001"
down_revision = None
branch_labels = ("ledger",)
depends_on = None


def upgrade() -> None:
    """Creates the tables and the triggers that guard them."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("normal_side", sa.String(6), nullable=False),
        sa.Column("balance_shards", sa.SmallInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.UniqueConstraint("owner", "kind", "currency", "livemode", name="uq_accounts_identity"),
        sa.UniqueConstraint("id", "currency", name="uq_accounts_id_currency"),
        sa.CheckConstraint(
            "normal_side IN ('debit', 'credit')", name="ck_accounts_normal_side_known"
        ),
        sa.CheckConstraint(
            "balance_shards BETWEEN 1 AND 64", name="ck_accounts_balance_shards_range"
        ),
        sa.CheckConstraint(
            "kind IN ('processor_receivable', 'platform_fees', 'merchant_balance')",
            name="ck_accounts_kind_known",
        ),
    )
    op.create_table(
        "account_balances",
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("external_reference", sa.String(200), nullable=False, unique=True),
        sa.Column("postings_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False, server_default=""),
        sa.Column("metadata", JSONB, nullable=False, server_default="{}"),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        # The database transaction that created it: only that one may add its entries.
        sa.Column("create_xid", sa.Text, nullable=False),
    )
    op.create_index("ix_transactions_create_time", "transactions", ["create_time"])
    op.create_index("ix_transactions_source_id", "transactions", ["source_id"])
    op.create_table(
        "entries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column(
            "transaction_id", sa.String(40), sa.ForeignKey("transactions.id"), nullable=False
        ),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("direction", sa.String(6), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["account_id", "currency"],
            ["accounts.id", "accounts.currency"],
            name="fk_entries_account_currency",
        ),
        sa.CheckConstraint("amount > 0", name="ck_entries_amount_positive"),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name="ck_entries_direction_known"),
    )
    op.create_index("ix_entries_transaction_id", "entries", ["transaction_id"])
    op.create_index("ix_entries_account_seq", "entries", ["account_id", "seq"])
    op.create_index("ix_entries_account_create_time", "entries", ["account_id", "create_time"])
    op.create_index("ix_entries_source_seq", "entries", ["source_id", "seq"])

    # Append-only: entries and transactions are never changed or removed; a correction is a
    # new transaction.
    op.execute(
        """
        CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            RAISE EXCEPTION 'ledger % are append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END $$;
        """
    )
    for table in ("entries", "transactions"):
        op.execute(
            f"""
            CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION refuse_change();
            CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
            """
        )

    # Accounts are never removed, and what identifies one never changes (balance_shards may).
    op.execute(
        """
        CREATE FUNCTION guard_account() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            IF TG_OP <> 'UPDATE'
               OR (NEW.id, NEW.owner, NEW.kind, NEW.currency, NEW.livemode, NEW.normal_side)
                  IS DISTINCT FROM
                  (OLD.id, OLD.owner, OLD.kind, OLD.currency, OLD.livemode, OLD.normal_side)
            THEN
                RAISE EXCEPTION 'ledger accounts are permanent: % refused', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER accounts_guard BEFORE UPDATE OR DELETE ON accounts
            FOR EACH ROW EXECUTE FUNCTION guard_account();
        CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
            FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
        """
    )

    # A transaction's create_xid is always the inserting database transaction's id.
    op.execute(
        """
        CREATE FUNCTION stamp_transaction() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            NEW.create_xid := pg_current_xact_id()::text;
            RETURN NEW;
        END $$;
        CREATE TRIGGER transactions_stamp BEFORE INSERT ON transactions
            FOR EACH ROW EXECUTE FUNCTION stamp_transaction();
        """
    )

    # Every entry moves its account's stored balance, in the same statement. The balance is
    # spread over `balance_shards` rows picked by the transaction id, so a hot account (the
    # platform's fees, touched by every payment) is not one row every posting waits on.
    op.execute(
        """
        CREATE FUNCTION apply_entry() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        DECLARE
            account_row accounts%ROWTYPE;
            creator text;
        BEGIN
            SELECT create_xid INTO creator FROM transactions WHERE id = NEW.transaction_id;
            IF creator IS DISTINCT FROM pg_current_xact_id()::text THEN
                RAISE EXCEPTION 'entries can only be added with their transaction (%)',
                    NEW.transaction_id USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            SELECT * INTO STRICT account_row FROM accounts WHERE id = NEW.account_id;
            INSERT INTO account_balances AS b (account_id, shard, balance)
            VALUES (
                NEW.account_id,
                mod(hashtext(NEW.transaction_id)::bigint + 2147483648, account_row.balance_shards),
                CASE WHEN NEW.direction = account_row.normal_side
                     THEN NEW.amount ELSE -NEW.amount END
            )
            ON CONFLICT (account_id, shard) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
            RETURN NULL;
        END $$;
        CREATE TRIGGER entries_apply AFTER INSERT ON entries
            FOR EACH ROW EXECUTE FUNCTION apply_entry();
        """
    )

    # Balances are written by apply_entry only (trigger depth 2); any direct write is refused.
    op.execute(
        """
        CREATE FUNCTION guard_balance() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            IF pg_trigger_depth() < 2 OR TG_OP IN ('DELETE', 'TRUNCATE') THEN
                RAISE EXCEPTION 'account balances change only through entries: % refused', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER account_balances_guard BEFORE INSERT OR UPDATE OR DELETE
            ON account_balances FOR EACH ROW EXECUTE FUNCTION guard_balance();
        CREATE TRIGGER account_balances_no_truncate BEFORE TRUNCATE ON account_balances
            FOR EACH STATEMENT EXECUTE FUNCTION guard_balance();
        """
    )

    # Debits equal credits per currency, and at least two entries: checked at COMMIT, when
    # every entry of the transaction is in.
    op.execute(
        """
        CREATE FUNCTION check_transaction_balanced(transaction text) RETURNS void
        LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        DECLARE
            line record;
            entry_count bigint;
        BEGIN
            SELECT count(*) INTO entry_count FROM entries WHERE transaction_id = transaction;
            IF entry_count < 2 THEN
                RAISE EXCEPTION 'ledger transaction % has % entries; it needs two or more',
                    transaction, entry_count USING ERRCODE = 'check_violation';
            END IF;
            FOR line IN
                SELECT currency,
                       sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                       sum(amount) FILTER (WHERE direction = 'credit') AS credits
                FROM entries WHERE transaction_id = transaction
                GROUP BY currency
            LOOP
                IF coalesce(line.debits, 0) <> coalesce(line.credits, 0) THEN
                    RAISE EXCEPTION
                        'ledger transaction % is unbalanced in %: debits % <> credits %',
                        transaction, line.currency, coalesce(line.debits, 0),
                        coalesce(line.credits, 0)
                        USING ERRCODE = 'check_violation';
                END IF;
            END LOOP;
        END $$;
        CREATE FUNCTION check_entry_transaction() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            PERFORM check_transaction_balanced(NEW.transaction_id);
            RETURN NULL;
        END $$;
        CREATE FUNCTION check_transaction() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            PERFORM check_transaction_balanced(NEW.id);
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION check_entry_transaction();
        CREATE CONSTRAINT TRIGGER transactions_balanced AFTER INSERT ON transactions
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION check_transaction();
        """
    )


def downgrade() -> None:
    """Drops the tables and their functions."""
    op.drop_table("entries")
    op.drop_table("transactions")
    op.drop_table("account_balances")
    op.drop_table("accounts")
    for function in (
        "check_transaction()",
        "check_entry_transaction()",
        "check_transaction_balanced(text)",
        "guard_balance()",
        "apply_entry()",
        "stamp_transaction()",
        "guard_account()",
        "refuse_change()",
    ):
        op.execute(f"DROP FUNCTION {function}")
