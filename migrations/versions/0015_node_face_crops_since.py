"""When a node's face crops were last allowed: its frames from before (still queued when the
policy changed) keep none, as the policy applies from the node's next frame. And the webhook
deliveries by the job and the person they are about: deleting a job or a person deletes them
(a scan of every delivery took ~0.1 s at 300k rows, a day of a receiver being down).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The expressions of app/events_out/service.py's deletes (app/models.py WebhookDelivery).
DELIVERY_INDEXES = (
    ("ix_webhook_deliveries_job", "((payload -> 'job') ->> 'id')", None),
    (
        "ix_webhook_deliveries_person",
        "(((payload -> 'data') -> 'person') ->> 'id')",
        "event_type = 'face.identified'",
    ),
    (
        "ix_webhook_deliveries_cluster",
        "((payload -> 'data') ->> 'cluster_id')",
        "event_type = 'face.unknown'",
    ),
)


def upgrade() -> None:
    # NULL: allowed since the node was made (or not allowed at all: store_face_crops says).
    op.add_column("nodes", sa.Column("face_crops_since", sa.DateTime(timezone=True), nullable=True))
    for name, expression, where in DELIVERY_INDEXES:
        op.create_index(
            name,
            "webhook_deliveries",
            [sa.text(expression)],
            postgresql_where=sa.text(where) if where else None,
        )


def downgrade() -> None:
    for name, _, _ in reversed(DELIVERY_INDEXES):
        op.drop_index(name, table_name="webhook_deliveries")
    op.drop_column("nodes", "face_crops_since")
