"""The PostgreSQL layer's statements, one per operation; ``render`` puts the quoted schema in.

A ``group_send`` is one statement: it selects the live members, inserts one row per member process
and per named channel (capacity and expiry checked in the same statement), and calls ``pg_notify``
once per receiving process or channel. Concurrent ``send`` calls of one layer share one statement
(an ``INSERT ... SELECT FROM unnest(...)``). Notifications carry no payload, so message size is
not bound by NOTIFY's 8000 bytes. Named channels are read by ``DELETE ... FOR UPDATE SKIP
LOCKED``, so two readers never get the same message.
"""

from __future__ import annotations

# membership.kind
PROCESS = 0  # member is a process id: its inbox gets one group entry
NAMED = 1  # member is a named channel: a row in ``message``
REMOTE = 2  # member is a ``!`` channel: its process's inbox gets a channel entry

# Sends and reads commit asynchronously (statement-local; membership changes stay synchronous).
# A transaction that NOTIFYs holds a cluster-wide lock until its commit is done, so waiting for the
# WAL flush there halves send throughput, and a reader waiting for one flush per message falls
# behind its senders. The price, only on a PostgreSQL *crash* (not a restart): messages sent or
# read in the last WAL-writer interval (~0.2 s) may be lost or delivered again. Like Redis' AOF
# ``everysec``; a channel layer's messages are ephemeral anyway.
ASYNC_COMMIT = "async_commit AS (SELECT set_config('synchronous_commit', 'off', true))"
# Concurrent sends of one layer go in one statement (batching.py). $1 prefix; per message:
# $2 to an inbox?, $3 its process or named channel, $4 the process-local channel (inbox rows),
# $5 data; $6 expiry seconds, $7 capacity, $8 inbox capacity, $9 notify key (see _notify_name).
# A message is admitted when its rank among this batch's messages to the same target, plus what
# the target already holds, stays within capacity; returns the ordinals (1-based) admitted.
SEND_BATCH = """
    WITH {async_commit}, batch AS (
        SELECT b.*, row_number() OVER (PARTITION BY b.inbox, b.target ORDER BY b.ord) AS rank
        FROM unnest($2::bool[], $3::text[], $4::text[], $5::bytea[])
             WITH ORDINALITY AS b(inbox, target, name, data, ord)
    ), admitted AS (
        SELECT b.* FROM batch AS b
        WHERE b.rank + CASE WHEN b.inbox
            THEN (SELECT count(*) FROM (SELECT 1 FROM {s}.inbox AS i WHERE i.prefix = $1
                  AND i.process = b.target AND i.expires_at > now() LIMIT $8) AS held)
            ELSE (SELECT count(*) FROM (SELECT 1 FROM {s}.message AS m WHERE m.prefix = $1
                  AND m.channel = b.target AND m.expires_at > now() LIMIT $7) AS held)
            END <= CASE WHEN b.inbox THEN $8 ELSE $7 END
    ), to_inbox AS (
        INSERT INTO {s}.inbox (prefix, process, to_group, name, data, expires_at)
        SELECT $1, target, false, name, data, now() + make_interval(secs => $6)
        FROM admitted WHERE inbox ORDER BY ord
        RETURNING process
    ), to_channel AS (
        INSERT INTO {s}.message (prefix, channel, data, expires_at)
        SELECT $1, target, data, now() + make_interval(secs => $6)
        FROM admitted WHERE NOT inbox ORDER BY ord
        RETURNING channel
    ), notified AS (
        SELECT pg_notify('fws_' || md5($9 || t.target), '') FROM (
            SELECT 'p/' || process AS target FROM to_inbox
            UNION SELECT 'c/' || channel FROM to_channel
        ) AS t
    )
    SELECT array(SELECT ord FROM admitted) FROM (SELECT count(*) FROM notified) AS n, async_commit
"""
# $1 prefix, $2 group, $3 this process (its members get the message locally), $4 data,
# $5 expiry seconds, $6 capacity, $7 inbox capacity, $8 notify key (see _notify_name).
GROUP_SEND = """
    WITH {async_commit}, members AS (
        SELECT kind, member, process FROM {s}.membership
        WHERE prefix = $1 AND group_name = $2 AND expires_at > now() AND NOT (kind = 0 AND member = $3)
    ), to_inbox AS (
        INSERT INTO {s}.inbox (prefix, process, to_group, name, data, expires_at)
        SELECT $1, m.process, m.kind = 0, CASE WHEN m.kind = 0 THEN $2 ELSE m.member END, $4,
               now() + make_interval(secs => $5)
        FROM members AS m
        WHERE m.kind <> 1 AND (SELECT count(*) FROM (SELECT 1 FROM {s}.inbox AS i
              WHERE i.prefix = $1 AND i.process = m.process AND i.expires_at > now() LIMIT $7) AS held) < $7
        RETURNING process
    ), to_channel AS (
        INSERT INTO {s}.message (prefix, channel, data, expires_at)
        SELECT $1, m.member, $4, now() + make_interval(secs => $5)
        FROM members AS m
        WHERE m.kind = 1 AND (SELECT count(*) FROM (SELECT 1 FROM {s}.message AS c
              WHERE c.prefix = $1 AND c.channel = m.member AND c.expires_at > now() LIMIT $6) AS held) < $6
        RETURNING channel
    )
    SELECT count(*) FROM (
        SELECT pg_notify('fws_' || md5($8 || t.target), '') FROM (
            SELECT 'p/' || process AS target FROM to_inbox
            UNION SELECT 'c/' || channel FROM to_channel
        ) AS t
    ) AS notified, async_commit
"""
POP_MESSAGE = """
    WITH {async_commit}
    DELETE FROM {s}.message USING async_commit WHERE id = (
        SELECT id FROM {s}.message WHERE prefix = $1 AND channel = $2 AND expires_at > now()
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id, data, expires_at
"""
# A message popped for a receive that left goes back with its id (its place in line) and expiry;
# $1 id, $2 prefix, $3 channel, $4 data, $5 expires_at, $6 notify key.
RESTORE_MESSAGE = """
    WITH restored AS (
        INSERT INTO {s}.message (id, prefix, channel, data, expires_at) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (id) DO NOTHING RETURNING channel
    )
    SELECT count(pg_notify('fws_' || md5($6 || 'c/' || channel), '')) FROM restored
"""
DRAIN_INBOX = """
    WITH {async_commit}
    DELETE FROM {s}.inbox USING async_commit WHERE id IN (
        SELECT id FROM {s}.inbox WHERE prefix = $1 AND process = $2
        ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
    RETURNING id, to_group, name, data, expires_at > now() AS live
"""
JOIN = """
    INSERT INTO {s}.membership (prefix, group_name, kind, member, process, expires_at)
    SELECT $1, g, 0, $2, $2, now() + make_interval(secs => $4) FROM unnest($3::text[]) AS g
    ON CONFLICT (prefix, group_name, kind, member) DO UPDATE SET expires_at = excluded.expires_at
"""
LEAVE = "DELETE FROM {s}.membership WHERE prefix = $1 AND group_name = ANY($2::text[]) AND kind = 0 AND member = $3"
ADD_CHANNEL = """
    INSERT INTO {s}.membership (prefix, group_name, kind, member, process, expires_at)
    VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
    ON CONFLICT (prefix, group_name, kind, member) DO UPDATE SET expires_at = excluded.expires_at
"""
DISCARD_CHANNEL = "DELETE FROM {s}.membership WHERE prefix = $1 AND group_name = $2 AND kind = $3 AND member = $4"
FLUSH = """
    WITH m AS (DELETE FROM {s}.message WHERE prefix = $1),
         i AS (DELETE FROM {s}.inbox WHERE prefix = $1),
         g AS (DELETE FROM {s}.membership WHERE prefix = $1)
    SELECT 1
"""
FORGET_PROCESS = """
    WITH i AS (DELETE FROM {s}.inbox WHERE prefix = $1 AND process = $2)
    DELETE FROM {s}.membership WHERE prefix = $1 AND group_name = ANY($3::text[]) AND kind = 0 AND member = $2
"""
PRUNE = """
    WITH m AS (
        DELETE FROM {s}.message WHERE id IN (
            SELECT id FROM {s}.message WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING 1
    ), i AS (
        DELETE FROM {s}.inbox WHERE id IN (
            SELECT id FROM {s}.inbox WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING 1
    ), g AS (
        DELETE FROM {s}.membership WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {s}.membership WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM i), (SELECT count(*) FROM g)
"""


def render(template: str, quoted_schema: str) -> str:
    """A statement for one schema (already quoted with ``schema.quote_ident``)."""
    return template.replace("{async_commit}", ASYNC_COMMIT).replace("{s}", quoted_schema)
