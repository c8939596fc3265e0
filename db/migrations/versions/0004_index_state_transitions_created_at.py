"""index state_transitions.created_at (the sync circuit breaker counts recent sovits outcomes)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 19:56:09.820552
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('state_transitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_state_transitions_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('state_transitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_state_transitions_created_at'))
