"""quality gate: render attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 19:52:42.521639
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('render_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('segment_id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('dnsmos_sig', sa.Float(), nullable=True),
    sa.Column('dnsmos_bak', sa.Float(), nullable=True),
    sa.Column('dnsmos_ovrl', sa.Float(), nullable=True),
    sa.Column('dnsmos_p808', sa.Float(), nullable=True),
    sa.Column('similarity', sa.Float(), nullable=True),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('failures', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('notes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_render_attempts_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_render_attempts_segment_id_segments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_render_attempts')),
    sa.UniqueConstraint('segment_id', 'attempt', name=op.f('uq_render_attempts_segment_id_attempt'))
    )
    with op.batch_alter_table('render_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_render_attempts_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_render_attempts_segment_id'), ['segment_id'], unique=False)

    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('render_attempt', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('quality_passed', sa.Boolean(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_column('quality_passed')
        batch_op.drop_column('render_attempt')

    with op.batch_alter_table('render_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_render_attempts_segment_id'))
        batch_op.drop_index(batch_op.f('ix_render_attempts_job_id'))

    op.drop_table('render_attempts')
