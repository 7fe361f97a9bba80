"""catalog: services and endpoints as Keystone resources

Service types are no longer unique (Keystone allows several services of one type); services get a
description and endpoints an enabled flag.

Revision ID: 0008_catalog
Revises: 0007_server_groups
Create Date: 2026-12-01 23:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_catalog'
down_revision = '0007_server_groups'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_service_type'), type_='unique')
        batch_op.alter_column('type', existing_type=sa.String(length=64), type_=sa.String(length=255),
                              existing_nullable=False)
        batch_op.add_column(sa.Column('description', sa.Text(), server_default='', nullable=False))
        batch_op.create_index(batch_op.f('ix_service_type'), ['type'], unique=False)
    with op.batch_alter_table('endpoint', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('endpoint', schema=None) as batch_op:
        batch_op.drop_column('enabled')
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_type'))
        batch_op.drop_column('description')
        batch_op.alter_column('type', existing_type=sa.String(length=255), type_=sa.String(length=64),
                              existing_nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_service_type'), ['type'])
