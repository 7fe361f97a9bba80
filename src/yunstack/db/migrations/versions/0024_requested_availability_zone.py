"""compute: the zone a server was created in by request (Nova's request spec zone), which moves keep

Revision ID: 0024_requested_availability_zone
Revises: 0023_memory_balancer_history
Create Date: 2026-12-05 03:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0024_requested_availability_zone'
down_revision = '0023_memory_balancer_history'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Servers made before this column: unknown, so unrestricted (NULL), as Nova treats a request spec
    # without a zone.
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_availability_zone', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.drop_column('requested_availability_zone')
