"""Events, endpoints and their secrets, deliveries and attempts.

Revision ID: webhook_0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "webhook_0001"
down_revision = None
branch_labels = ("webhook",)
depends_on = None


def upgrade() -> None:
    """Creates the tables."""
    op.create_table(
        "events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "store_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_events_merchant_created", "events", ["merchant_id", "livemode", "create_time", "id"]
    )
    op.create_index("ix_events_object", "events", ["object_id", "create_time"])
    op.create_index("ix_events_created", "events", ["create_time"])

    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("enabled_events", JSONB, nullable=False),
        sa.Column("description", sa.String(1000), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="enabled"),
        sa.Column("disabled_reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("delete_time", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('enabled', 'disabled')", name="ck_endpoints_status_known"),
        sa.CheckConstraint(
            "jsonb_typeof(enabled_events) = 'array' AND jsonb_array_length(enabled_events) > 0",
            name="ck_endpoints_enabled_events_nonempty",
        ),
    )
    op.create_index(
        "ix_endpoints_merchant", "endpoints", ["merchant_id", "livemode", "create_time", "id"]
    )

    op.create_table(
        "endpoint_secrets",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "endpoint_id",
            sa.String(40),
            sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_endpoint_secrets_endpoint", "endpoint_secrets", ["endpoint_id", "create_time"]
    )
    # At most one current (unexpiring) secret per endpoint.
    op.create_index(
        "uq_endpoint_secrets_current",
        "endpoint_secrets",
        ["endpoint_id"],
        unique=True,
        postgresql_where=sa.text("expire_time IS NULL"),
    )

    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "event_id",
            sa.String(64),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "endpoint_id",
            sa.String(40),
            sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("round_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True)),
        sa.Column("lease_expire_time", sa.DateTime(timezone=True)),
        sa.Column("last_status_code", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=False, server_default=""),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failing', 'dead')",
            name="ck_deliveries_status_known",
        ),
        sa.CheckConstraint(
            "attempt_count >= 0 AND round_attempts >= 0", name="ck_deliveries_counts_nonnegative"
        ),
        # Something must make a live delivery happen: it always has a due time.
        sa.CheckConstraint(
            "status NOT IN ('pending', 'failing') OR next_attempt_time IS NOT NULL",
            name="ck_deliveries_live_has_due_time",
        ),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_deliveries_event_endpoint"),
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_time"],
        postgresql_where=sa.text("status IN ('pending', 'failing')"),
    )
    op.create_index("ix_deliveries_endpoint", "deliveries", ["endpoint_id", "create_time", "id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status", "update_time", "id"])
    op.create_index("ix_deliveries_event", "deliveries", ["event_id"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            sa.String(40),
            sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt_number", sa.Integer, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("status_code", sa.Integer, nullable=False, server_default="0"),
        sa.Column("response_body", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.String(500), nullable=False, server_default=""),
        sa.UniqueConstraint("delivery_id", "attempt_number", name="uq_delivery_attempts_number"),
    )


def downgrade() -> None:
    """Drops the tables."""
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("endpoint_secrets")
    op.drop_table("endpoints")
    op.drop_table("events")
