"""books, projects and the render cache

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 19:51:53.240922
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('render_cache',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('content_key', sa.String(length=64), nullable=False),
    sa.Column('audio_key', sa.String(length=512), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_render_cache_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_render_cache')),
    sa.UniqueConstraint('tenant_id', 'content_key', name=op.f('uq_render_cache_tenant_id_content_key'))
    )
    op.create_table('projects',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('voice_id', sa.Uuid(), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('output_format', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('options', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('source_key', sa.String(length=512), nullable=True),
    sa.Column('source_format', sa.String(length=16), nullable=True),
    sa.Column('schedule_every_s', sa.Integer(), nullable=True),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_job_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_projects_tenant_id_tenants')),
    sa.ForeignKeyConstraint(['voice_id'], ['voices.id'], name=op.f('fk_projects_voice_id_voices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('tenant_id', 'name', name=op.f('uq_projects_tenant_id_name'))
    )
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_projects_next_run_at'), ['next_run_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_projects_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_projects_voice_id'), ['voice_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('source_key', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('source_format', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('book', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_project_id'), ['project_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_jobs_project_id_projects'), 'projects', ['project_id'], ['id'])

    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chapter', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('pause_after_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('caption', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_column('caption')
        batch_op.drop_column('pause_after_s')
        batch_op.drop_column('chapter')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_project_id_projects'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_jobs_project_id'))
        batch_op.drop_column('book')
        batch_op.drop_column('source_format')
        batch_op.drop_column('source_key')
        batch_op.drop_column('project_id')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_projects_voice_id'))
        batch_op.drop_index(batch_op.f('ix_projects_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_projects_next_run_at'))

    op.drop_table('projects')
    op.drop_table('render_cache')
