"""compute: a server's host work moves from instance.pending to the task table

Each step still queued in ``instance.pending`` becomes a queued task ``server.<op>`` (the kinds
``compute.operations.queue`` registers) on the host that runs it, then the column goes.  A step an
agent was running when the old version stopped is queued again: every step is safe to repeat.

Revision ID: 0016_server_tasks
Revises: 0015_migrations
Create Date: 2026-12-03 02:00:00
"""

import uuid
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa

import yunstack.db.base


revision = '0016_server_tasks'
down_revision = '0015_migrations'
branch_labels = None
depends_on = None

MAX_ATTEMPTS = 3


def upgrade() -> None:
    bind = op.get_bind()
    instances = sa.table('instance', sa.column('id', sa.String), sa.column('project_id', sa.String),
                         sa.column('host', sa.String), sa.column('pending', sa.JSON))
    tasks = sa.table('tasks', sa.column('id', sa.String), sa.column('kind', sa.String),
                     sa.column('resource_type', sa.String), sa.column('resource_id', sa.String),
                     sa.column('project_id', sa.String), sa.column('host', sa.String),
                     sa.column('step', sa.String), sa.column('args', sa.JSON), sa.column('state', sa.String),
                     sa.column('attempt', sa.Integer), sa.column('max_attempts', sa.Integer),
                     sa.column('request_id', sa.String), sa.column('created_at', yunstack.db.base.UTCDateTime()),
                     sa.column('updated_at', yunstack.db.base.UTCDateTime()))
    now = datetime.now(UTC)
    for row in bind.execute(sa.select(instances).where(instances.c.pending.is_not(None))).mappings():
        stored = row['pending'] or {}
        op_name = str(stored.get('op') or '')
        host = stored.get('host') or row['host']
        if not op_name or not host:
            continue
        bind.execute(tasks.insert().values(
            id=str(uuid.uuid4()), kind=f'server.{op_name}', resource_type='server', resource_id=row['id'],
            project_id=row['project_id'], host=host, step=op_name,
            args={**(stored.get('args') or {}), 'op': op_name}, state='queued', attempt=0,
            max_attempts=MAX_ATTEMPTS, request_id=stored.get('request_id'), created_at=now, updated_at=now))
    with op.batch_alter_table('instance') as batch:
        batch.drop_column('pending')


def downgrade() -> None:
    with op.batch_alter_table('instance') as batch:
        batch.add_column(sa.Column('pending', sa.JSON(), nullable=True))
