"""server groups

Revision ID: 0007_server_groups
Revises: 0006_server_actions
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0007_server_groups'
down_revision = '0006_server_actions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('server_group',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('policy', sa.String(length=32), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_group'))
    )
    with op.batch_alter_table('server_group', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_server_group_project_id'), ['project_id'], unique=False)
    op.create_table('server_group_member',
    sa.Column('group_id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['server_group.id'],
                            name=op.f('fk_server_group_member_group_id_server_group'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'instance_id', name=op.f('pk_server_group_member')),
    sa.UniqueConstraint('instance_id', name=op.f('uq_server_group_member_instance_id'))
    )


def downgrade() -> None:
    op.drop_table('server_group_member')
    with op.batch_alter_table('server_group', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_server_group_project_id'))
    op.drop_table('server_group')
