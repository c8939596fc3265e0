"""models as data: named GPT + SoVITS pairs, voice features per SoVITS file, the model each job
ran on, and the per-API-key weight selection of the api_v2 drop-in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 04:22:23.106483
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('generation', sa.String(length=16), nullable=False),
    sa.Column('gpt_path', sa.String(length=1024), nullable=False),
    sa.Column('sovits_path', sa.String(length=1024), nullable=False),
    sa.Column('gpt_sha256', sa.String(length=64), nullable=False),
    sa.Column('sovits_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_models_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('tenant_id', 'name', name=op.f('uq_models_tenant_id_name'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('uq_models_deployment_name', ['name'], unique=True, postgresql_where=sa.text('tenant_id IS NULL'), sqlite_where=sa.text('tenant_id IS NULL'))

    op.create_table('model_selections',
    sa.Column('selector', sa.String(length=80), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('gpt_model_id', sa.Uuid(), nullable=True),
    sa.Column('sovits_model_id', sa.Uuid(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['gpt_model_id'], ['models.id'], name=op.f('fk_model_selections_gpt_model_id_models'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sovits_model_id'], ['models.id'], name=op.f('fk_model_selections_sovits_model_id_models'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_model_selections_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('selector', name=op.f('pk_model_selections'))
    )
    with op.batch_alter_table('model_selections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_selections_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('voice_features',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('voice_id', sa.Uuid(), nullable=False),
    sa.Column('generation', sa.String(length=16), nullable=False),
    sa.Column('sovits_sha256', sa.String(length=64), nullable=False),
    sa.Column('features_key', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['voice_id'], ['voices.id'], name=op.f('fk_voice_features_voice_id_voices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_voice_features')),
    sa.UniqueConstraint('voice_id', 'sovits_sha256', name=op.f('uq_voice_features_voice_id_sovits_sha256'))
    )
    with op.batch_alter_table('voice_features', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_voice_features_voice_id'), ['voice_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('model_generation', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('model_gpt_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('model_sovits_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('model_gpt_path', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('model_sovits_path', sa.String(length=1024), nullable=True))

    with op.batch_alter_table('voices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_id', sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f('ix_voices_model_id'), ['model_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_voices_model_id_models'), 'models', ['model_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('voices', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_voices_model_id_models'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_voices_model_id'))
        batch_op.drop_column('model_id')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('model_sovits_path')
        batch_op.drop_column('model_gpt_path')
        batch_op.drop_column('model_sovits_sha256')
        batch_op.drop_column('model_gpt_sha256')
        batch_op.drop_column('model_generation')
        batch_op.drop_column('model_name')

    with op.batch_alter_table('voice_features', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_voice_features_voice_id'))

    op.drop_table('voice_features')
    with op.batch_alter_table('model_selections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_selections_tenant_id'))

    op.drop_table('model_selections')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('uq_models_deployment_name', postgresql_where=sa.text('tenant_id IS NULL'), sqlite_where=sa.text('tenant_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_models_tenant_id'))

    op.drop_table('models')
