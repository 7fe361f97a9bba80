"""compute: what each host's driver can do (live migration modes, block migration, accel, ...)

Revision ID: 0014_capabilities
Revises: 0009_network_more
Create Date: 2026-12-02 03:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0014_capabilities'
down_revision = '0013_vxlan'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('compute_node', schema=None) as batch_op:
        batch_op.add_column(sa.Column('capabilities', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('compute_node', schema=None) as batch_op:
        batch_op.drop_column('capabilities')
