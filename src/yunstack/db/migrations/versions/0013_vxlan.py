"""network: each host's VXLAN tunnel address

Revision ID: 0013_vxlan
Revises: 0009_network_more
Create Date: 2026-12-02 03:30:00
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0013_vxlan'
down_revision = '0012_quota'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('network_host',
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('tunnel_ip', sa.String(length=64), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('host', name=op.f('pk_network_host'))
    )


def downgrade() -> None:
    op.drop_table('network_host')
