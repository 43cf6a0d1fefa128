"""edge nodes; jobs.node_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("tasks", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("store_frames", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "status",
            sa.Enum("online", "offline", name="node_status", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "state",
            sa.Enum("active", "idle", name="node_state", native_enum=False, length=16),
            nullable=True,
        ),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("latency_ms_p50", sa.Float(), nullable=True),
        sa.Column("dark_scene", sa.Boolean(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_nodes_name_active",
        "nodes",
        ["name"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.add_column("jobs", sa.Column("node_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        "jobs_node_id_fkey", "jobs", "nodes", ["node_id"], ["id"], ondelete="SET NULL"
    )
    op.create_index("ix_jobs_node_id_created_at", "jobs", ["node_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_node_id_created_at", table_name="jobs")
    op.drop_constraint("jobs_node_id_fkey", "jobs", type_="foreignkey")
    op.drop_column("jobs", "node_id")
    op.drop_index("ux_nodes_name_active", table_name="nodes")
    op.drop_table("nodes")
