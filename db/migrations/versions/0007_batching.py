"""segments.gpt_batch_id / gpt_batch_size: which batched T2S run rendered a segment

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 04:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpt_batch_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('gpt_batch_size', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_column('gpt_batch_size')
        batch_op.drop_column('gpt_batch_id')
