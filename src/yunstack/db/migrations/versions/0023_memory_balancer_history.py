"""compute: the memory balancer's history (passes that moved a guest or changed the plan), and an
index on memory_sample (host, at) for each host's newest sample

Revision ID: 0023_memory_balancer_history
Revises: 0022_aggregates
Create Date: 2026-12-05 00:40:00
"""

from alembic import op
import sqlalchemy as sa

import yunstack.db.base


revision = '0023_memory_balancer_history'
down_revision = '0022_aggregates'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('memory_balancer_pass',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('queued', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memory_balancer_pass'))
    )
    with op.batch_alter_table('memory_balancer_pass', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memory_balancer_pass_at'), ['at'], unique=False)
    with op.batch_alter_table('memory_sample', schema=None) as batch_op:
        batch_op.create_index('ix_memory_sample_host_at', ['host', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('memory_sample', schema=None) as batch_op:
        batch_op.drop_index('ix_memory_sample_host_at')
    with op.batch_alter_table('memory_balancer_pass', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_memory_balancer_pass_at'))
    op.drop_table('memory_balancer_pass')
