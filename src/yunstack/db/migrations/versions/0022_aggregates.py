"""compute: host aggregates (Nova os-aggregates), their hosts and their metadata

Revision ID: 0022_aggregates
Revises: 0021_cinder_attachments
Create Date: 2026-12-04 23:50:00
"""

from alembic import op
import sqlalchemy as sa

import yunstack.db.base


revision = '0022_aggregates'
down_revision = '0021_cinder_attachments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('aggregate',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aggregate')),
    sa.UniqueConstraint('name', name=op.f('uq_aggregate_name')),
    sa.UniqueConstraint('uuid', name=op.f('uq_aggregate_uuid'))
    )
    op.create_table('aggregate_host',
    sa.Column('aggregate_id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['aggregate_id'], ['aggregate.id'], name=op.f('fk_aggregate_host_aggregate_id_aggregate'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('aggregate_id', 'host', name=op.f('pk_aggregate_host'))
    )
    op.create_index(op.f('ix_aggregate_host_host'), 'aggregate_host', ['host'], unique=False)
    op.create_table('aggregate_metadata',
    sa.Column('aggregate_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['aggregate_id'], ['aggregate.id'],
                            name=op.f('fk_aggregate_metadata_aggregate_id_aggregate'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('aggregate_id', 'key', name=op.f('pk_aggregate_metadata'))
    )
    op.create_index(op.f('ix_aggregate_metadata_key'), 'aggregate_metadata', ['key'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_aggregate_metadata_key'), table_name='aggregate_metadata')
    op.drop_table('aggregate_metadata')
    op.drop_index(op.f('ix_aggregate_host_host'), table_name='aggregate_host')
    op.drop_table('aggregate_host')
    op.drop_table('aggregate')
