"""volumes: the NBD connection of an attachment across hosts

Revision ID: 0020_volume_exports
Revises: 0019_boot_volumes
Create Date: 2026-12-04 21:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0020_volume_exports'
down_revision = '0019_boot_volumes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('connection', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.drop_column('connection')
