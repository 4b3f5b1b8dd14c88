"""messages, stream seqs and job markers

Revision ID: 0001_messages
Revises:
Create Date: 2026-12-04 01:14:19.550723
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001_messages'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('job_markers',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('expires', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_job_markers'))
    )
    with op.batch_alter_table('job_markers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_markers_expires'), ['expires'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('stream', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('kind', 'stream', 'seq', name=op.f('uq_messages_kind_stream_seq')),
    sa.UniqueConstraint('sender', 'client_id', name=op.f('uq_messages_sender_client_id'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_ts'), ['ts'], unique=False)

    op.create_table('stream_seq',
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('stream', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'stream', name=op.f('pk_stream_seq'))
    )


def downgrade() -> None:
    op.drop_table('stream_seq')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_ts'))

    op.drop_table('messages')
    with op.batch_alter_table('job_markers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_markers_expires'))

    op.drop_table('job_markers')
