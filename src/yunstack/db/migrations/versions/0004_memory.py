"""memory ledger samples

Revision ID: 0004_memory
Revises: 0003_compute
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0004_memory'
down_revision = '0003_compute'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('memory_sample',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memory_sample'))
    )
    with op.batch_alter_table('memory_sample', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memory_sample_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_memory_sample_host'), ['host'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('memory_sample', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_memory_sample_host'))
        batch_op.drop_index(batch_op.f('ix_memory_sample_at'))
    op.drop_table('memory_sample')
