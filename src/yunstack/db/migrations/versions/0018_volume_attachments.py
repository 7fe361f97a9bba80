"""volumes: a volume's attachments to servers

Revision ID: 0018_volume_attachments
Revises: 0017_volumes
Create Date: 2026-12-04 17:05:00
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0018_volume_attachments'
down_revision = '0017_volumes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volume_attachment',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('device', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('mode', sa.String(length=2), nullable=False),
    sa.Column('delete_on_termination', sa.Boolean(), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('attached_at', yunstack.db.base.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['volume_id'], ['volume.id'], name=op.f('fk_volume_attachment_volume_id_volume')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_attachment'))
    )
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volume_attachment_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_volume_attachment_volume_id'), ['volume_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('volume_attachment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_attachment_volume_id'))
        batch_op.drop_index(batch_op.f('ix_volume_attachment_instance_id'))

    op.drop_table('volume_attachment')
