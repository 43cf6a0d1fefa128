"""Webhook queues read through indexes that fit them: a webhook's head (its oldest pending
delivery) and its deliveries page by page, by (webhook_id, seq). The unique index on `seq` alone
is dropped (the identity column already numbers every row once): Postgres walked it in `seq`
order filtering on the webhook whenever it planned for any webhook at once (a prepared
statement's generic plan, a LATERAL per webhook), passing every other webhook's deliveries:
11-17 ms for a webhook's head beside another's 100k-delivery backlog, 0.1-0.2 ms now (a probe).
With the dispatcher's due webhooks found by their heads, such a backlog at rest costs Postgres
1.0 ms of CPU a second, 22.0 before (bench/events_out.py).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["webhook_id", "seq"],
        postgresql_where=sa.text("((status)::text = 'pending'::text)"),
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_seq", "webhook_deliveries", ["webhook_id", "seq"]
    )
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_constraint("webhook_deliveries_seq_key", "webhook_deliveries", type_="unique")


def downgrade() -> None:
    op.create_unique_constraint("webhook_deliveries_seq_key", "webhook_deliveries", ["seq"])
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["webhook_id", "status", "seq"]
    )
    op.drop_index("ix_webhook_deliveries_webhook_seq", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
