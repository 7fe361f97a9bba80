"""compute: migrations (Nova's view of servers moving between hosts, and the state of the move)

Revision ID: 0015_migrations
Revises: 0014_capabilities
Create Date: 2026-12-02 07:00:00
"""

from alembic import op
import sqlalchemy as sa

import yunstack.db.base


revision = '0015_migrations'
down_revision = '0014_capabilities'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migrations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('instance_uuid', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('migration_type', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('source_compute', sa.String(length=255), nullable=False),
    sa.Column('dest_compute', sa.String(length=255), nullable=False),
    sa.Column('dest_host', sa.String(length=255), nullable=True),
    sa.Column('old_flavor_id', sa.String(length=255), nullable=True),
    sa.Column('new_flavor_id', sa.String(length=255), nullable=True),
    sa.Column('block_migration', sa.Boolean(), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=True),
    sa.Column('rolling_back', sa.Boolean(), nullable=False),
    sa.Column('memory_total_bytes', sa.BigInteger(), nullable=True),
    sa.Column('disk_total_bytes', sa.BigInteger(), nullable=True),
    sa.Column('total_ms', sa.Integer(), nullable=True),
    sa.Column('downtime_ms', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_migrations')),
    sa.UniqueConstraint('uuid', name=op.f('uq_migrations_uuid'))
    )
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        for column in ('instance_uuid', 'project_id', 'status', 'source_compute', 'dest_compute'):
            batch_op.create_index(batch_op.f(f'ix_migrations_{column}'), [column], unique=False)


def downgrade() -> None:
    op.drop_table('migrations')
