"""volumes: Cinder volumes, snapshots, volume types and quotas

The default volume type is made by the volume service at start (its name is configured), not here.

Revision ID: 0017_volumes
Revises: 0016_server_tasks
Create Date: 2026-12-04 16:40:00
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0017_volumes'
down_revision = '0016_server_tasks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volume_quota',
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('resource', sa.String(length=64), nullable=False),
    sa.Column('hard_limit', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'resource', name=op.f('pk_volume_quota'))
    )
    op.create_table('volume_type',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('extra_specs', sa.JSON(), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_type')),
    sa.UniqueConstraint('name', name=op.f('uq_volume_type_name'))
    )
    op.create_table('volume',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('availability_zone', sa.String(length=255), nullable=False),
    sa.Column('volume_type_id', sa.String(length=36), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('bootable', sa.Boolean(), nullable=False),
    sa.Column('read_only', sa.Boolean(), nullable=True),
    sa.Column('multiattach', sa.Boolean(), nullable=False),
    sa.Column('snapshot_id', sa.String(length=36), nullable=True),
    sa.Column('source_volid', sa.String(length=36), nullable=True),
    sa.Column('image_id', sa.String(length=36), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('image_metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('launched_at', yunstack.db.base.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['volume_type_id'], ['volume_type.id'], name=op.f('fk_volume_volume_type_id_volume_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume'))
    )
    with op.batch_alter_table('volume', schema=None) as batch_op:
        batch_op.create_index('ix_volume_project_created', ['project_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_volume_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_volume_status'), ['status'], unique=False)

    op.create_table('volume_snapshot',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('progress', sa.String(length=8), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['volume_id'], ['volume.id'], name=op.f('fk_volume_snapshot_volume_id_volume')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_snapshot'))
    )
    with op.batch_alter_table('volume_snapshot', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volume_snapshot_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_volume_snapshot_volume_id'), ['volume_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('volume_snapshot', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_snapshot_volume_id'))
        batch_op.drop_index(batch_op.f('ix_volume_snapshot_project_id'))

    op.drop_table('volume_snapshot')
    with op.batch_alter_table('volume', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_status'))
        batch_op.drop_index(batch_op.f('ix_volume_project_id'))
        batch_op.drop_index('ix_volume_project_created')

    op.drop_table('volume')
    op.drop_table('volume_type')
    op.drop_table('volume_quota')
