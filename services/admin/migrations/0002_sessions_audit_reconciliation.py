"""Operator sessions, the append-only audit log, kept reconciliation runs.

Revision ID: admin_0002
Revises: admin_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "admin_0002"
down_revision = "admin_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates the tables and the trigger that keeps the audit log append-only."""
    op.create_table(
        "operator_sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("operator_id", sa.String(40), sa.ForeignKey("operators.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        # A stream token belongs to the session that asked for it and dies with it.
        sa.Column("parent_id", sa.String(40), sa.ForeignKey("operator_sessions.id")),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("client_ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "purpose IN ('session', 'stream')", name="ck_operator_sessions_purpose_known"
        ),
        sa.CheckConstraint(
            "(purpose = 'stream') = (parent_id IS NOT NULL)",
            name="ck_operator_sessions_stream_has_parent",
        ),
    )
    op.create_index("ix_operator_sessions_operator_id", "operator_sessions", ["operator_id"])
    op.create_index("ix_operator_sessions_parent_id", "operator_sessions", ["parent_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("operator_id", sa.String(40), nullable=False, server_default=""),
        sa.Column("operator_email", sa.String(320), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("client_ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("user_agent", sa.String(512), nullable=False, server_default=""),
        sa.Column("details", postgresql.JSONB, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_log_operator_id", "audit_log", ["operator_id"])
    op.create_index("ix_audit_log_target_id", "audit_log", ["target_id"])
    # The database itself refuses to rewrite history, whatever code or person asks.
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("operator_id", sa.String(40), sa.ForeignKey("operators.id"), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_count", sa.BigInteger, nullable=False),
        sa.Column("mismatch_count", sa.Integer, nullable=False),
        # The ledger's report as proto3 JSON, shown again exactly as it came.
        sa.Column("report", postgresql.JSONB, nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("start_time < end_time", name="ck_reconciliation_runs_range_ordered"),
    )


def downgrade() -> None:
    """Drops the tables and the trigger."""
    op.drop_table("reconciliation_runs")
    op.drop_table("audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index("ix_operator_sessions_parent_id", "operator_sessions")
    op.drop_table("operator_sessions")
