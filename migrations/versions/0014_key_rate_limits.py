"""A key may have its own rate limit (requests per LOOKOUT_AUTH__RATE_LIMIT_WINDOW_S; 0: none),
for a client such as Frigate's detector, which posts every frame with motion.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: the deployment's default (LOOKOUT_AUTH__RATE_LIMIT_REQUESTS).
    op.add_column("api_keys", sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.create_check_constraint("ck_api_keys_rate_limit", "api_keys", "rate_limit >= 0")


def downgrade() -> None:
    op.drop_constraint("ck_api_keys_rate_limit", "api_keys", type_="check")
    op.drop_column("api_keys", "rate_limit")
