"""render verdicts: passed / failed / unscored, scores and T2S stop reason on segments, render
attempts and the render cache (a reused segment keeps its render's verdict)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 04:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quality_verdict', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('quality_scores', _json(), nullable=True))
        batch_op.add_column(sa.Column('stop_reason', sa.String(length=8), nullable=True))

    with op.batch_alter_table('render_cache', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quality_verdict', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('quality_scores', _json(), nullable=True))
        batch_op.add_column(sa.Column('stop_reason', sa.String(length=8), nullable=True))

    with op.batch_alter_table('render_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('verdict', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('stop_reason', sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('render_attempts', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('verdict')

    with op.batch_alter_table('render_cache', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('quality_scores')
        batch_op.drop_column('quality_verdict')

    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('quality_scores')
        batch_op.drop_column('quality_verdict')
