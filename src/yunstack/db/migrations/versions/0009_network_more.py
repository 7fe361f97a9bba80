"""network: router extra routes

Revision ID: 0009_network_more
Revises: 0005_network
Create Date: 2026-12-01 23:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009_network_more'
down_revision = '0005_network'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('router', schema=None) as batch_op:
        batch_op.add_column(sa.Column('routes', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('router', schema=None) as batch_op:
        batch_op.drop_column('routes')
