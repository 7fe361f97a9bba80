"""compute: an index for the server list's default page (project, newest first)

Revision ID: 0012_quota
Revises: 0009_network_more
Create Date: 2026-12-02 04:30:00
"""

from alembic import op


revision = '0012_quota'
down_revision = '0011_hosts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_instance_project_created', 'instance', ['project_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_instance_project_created', table_name='instance')
