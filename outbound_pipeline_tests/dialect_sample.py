"""The table the dialect layer's tests write on every engine (test_dialects, test_snowflake): a
column of each type the pipeline's own tables use, keyed like them by a partition and a key."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

PARIS = dt.timezone(dt.timedelta(hours=2))
meta = sa.MetaData()
sample = sa.Table(
    "dialect_sample",
    meta,
    sa.Column("part", sa.String(10), nullable=False),
    sa.Column("key", sa.String(40), nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("count", sa.Integer),
    sa.Column("ratio", sa.Float),
    sa.Column("flag", sa.Boolean),
    sa.Column("day", sa.Date),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("part", "key"),
)
