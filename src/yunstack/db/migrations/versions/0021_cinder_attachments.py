"""volumes: attachments made through Cinder's attachments API (their origin and connector)

Revision ID: 0021_cinder_attachments
Revises: 0020_volume_exports
Create Date: 2026-12-04 21:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0021_cinder_attachments'
down_revision = '0020_volume_exports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=8), server_default='compute', nullable=False))
        batch_op.add_column(sa.Column('connector', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.drop_column('connector')
        batch_op.drop_column('origin')
