"""server actions: who locked a server, and the instance's system metadata (shelve's image)

Revision ID: 0006_server_actions
Revises: 0005_network
Create Date: 2026-12-01 23:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_server_actions'
down_revision = '0005_network'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instance') as batch:
        batch.add_column(sa.Column('locked_by', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('system_metadata', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instance') as batch:
        batch.drop_column('system_metadata')
        batch.drop_column('locked_by')
