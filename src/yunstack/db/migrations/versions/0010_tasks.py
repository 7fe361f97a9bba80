"""tasks: the durable record of long-running work (steps hosts claim under a lease)

Revision ID: 0010_tasks
Revises: 0009_network_more
Create Date: 2026-12-02 03:30:00
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0010_tasks'
down_revision = '0009_network_more'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tasks',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('step', sa.String(length=64), nullable=True),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', yunstack.db.base.UTCDateTime(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('parent_id', sa.String(length=36), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('finished_at', yunstack.db.base.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['tasks.id'], name=op.f('fk_tasks_parent_id_tasks'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_tasks')),
    sa.UniqueConstraint('id', name=op.f('uq_tasks_id'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_host_state', ['host', 'state', 'seq'], unique=False)
        batch_op.create_index('ix_tasks_resource', ['resource_type', 'resource_id', 'seq'], unique=False)
        batch_op.create_index('ix_tasks_state_lease', ['state', 'lease_expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_request_id'), ['request_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_request_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_parent_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_kind'))
        batch_op.drop_index('ix_tasks_state_lease')
        batch_op.drop_index('ix_tasks_resource')
        batch_op.drop_index('ix_tasks_host_state')
    op.drop_table('tasks')
