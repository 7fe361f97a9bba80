"""hosts: one-time join tokens and per-host credentials for remote agents

Revision ID: 0011_hosts
Revises: 0009_network_more
Create Date: 2026-12-02 03:30:00
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0011_hosts'
down_revision = '0010_tasks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_join_token',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('expires_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('used_at', yunstack.db.base.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_host_join_token'))
    )
    with op.batch_alter_table('host_join_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_join_token_host'), ['host'], unique=False)
    op.create_table('host_credential',
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('host', name=op.f('pk_host_credential')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_host_credential_secret_hash'))
    )


def downgrade() -> None:
    op.drop_table('host_credential')
    with op.batch_alter_table('host_join_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_host_join_token_host'))
    op.drop_table('host_join_token')
