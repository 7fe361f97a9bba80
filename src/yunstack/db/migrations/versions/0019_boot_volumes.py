"""volumes: the boot index of a server's block device mapping

Revision ID: 0019_boot_volumes
Revises: 0018_volume_attachments
Create Date: 2026-12-04 21:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0019_boot_volumes'
down_revision = '0018_volume_attachments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('boot_index', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.drop_column('boot_index')
