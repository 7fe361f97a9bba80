"""network: router extra routes, subnet pools

Revision ID: 0009_network_more
Revises: 0008_catalog
Create Date: 2026-12-01 23:50:00
"""

from alembic import op
import sqlalchemy as sa
import yunstack.db.base


revision = '0009_network_more'
down_revision = '0008_catalog'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('router', schema=None) as batch_op:
        batch_op.add_column(sa.Column('routes', sa.JSON(), nullable=False, server_default='[]'))
    op.create_table('subnet_pool',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('ip_version', sa.Integer(), nullable=False),
    sa.Column('prefixes', sa.JSON(), nullable=False),
    sa.Column('default_prefixlen', sa.Integer(), nullable=False),
    sa.Column('min_prefixlen', sa.Integer(), nullable=False),
    sa.Column('max_prefixlen', sa.Integer(), nullable=False),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('revision_number', sa.Integer(), nullable=False),
    sa.Column('created_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', yunstack.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subnet_pool'))
    )
    with op.batch_alter_table('subnet_pool', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subnet_pool_project_id'), ['project_id'], unique=False)
    with op.batch_alter_table('subnet', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subnetpool_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_subnet_subnetpool_id'), ['subnetpool_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_subnet_subnetpool_id_subnet_pool'), 'subnet_pool',
                                    ['subnetpool_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('subnet', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_subnet_subnetpool_id_subnet_pool'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_subnet_subnetpool_id'))
        batch_op.drop_column('subnetpool_id')
    with op.batch_alter_table('subnet_pool', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subnet_pool_project_id'))
    op.drop_table('subnet_pool')
    with op.batch_alter_table('router', schema=None) as batch_op:
        batch_op.drop_column('routes')
