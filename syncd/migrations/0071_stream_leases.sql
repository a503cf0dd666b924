-- Per-stream ownership: each stream (a LowDB file, a QuestDB table, the Kafka relay) has its own
-- lease, so several instances share the streams. A lease is a session advisory lock in the
-- 'stream' class (key hashtext(stream)) plus a fencing epoch here, bumped by every new holder.
-- Instances are members while they hold their lock in the 'member' class; liveness is the lock
-- itself (PostgreSQL drops it with the session), so a dead instance needs no timeout to expire.
-- The classes are the int4 spellings of 'sync' (member) and 'strm' (stream); see syncd/ownership.py.

CREATE TABLE syncd.stream_leases (
    stream      text        PRIMARY KEY,
    epoch       bigint      NOT NULL DEFAULT 0,
    holder      text,
    acquired_at timestamptz
);

CREATE TABLE syncd.members (
    name      text        PRIMARY KEY,
    joined_at timestamptz NOT NULL DEFAULT now()
);

-- Aborts the calling transaction unless `expected` is still the stream's lease epoch. FOR SHARE
-- makes a takeover (the UPDATE bumping the epoch) wait until this transaction ends.
CREATE FUNCTION syncd.fence_stream(stream_name text, expected bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_epoch bigint;
BEGIN
    SELECT epoch INTO current_epoch FROM syncd.stream_leases WHERE stream = stream_name FOR SHARE;
    IF current_epoch IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'fenced: % epoch % is stale, its lease epoch is %', stream_name, expected, current_epoch
            USING ERRCODE = 'SY001';
    END IF;
END $$;

-- True while some session holds the two-key advisory lock (class, key).
CREATE FUNCTION syncd.advisory_held(class integer, key integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 2
           AND classid = class::bigint::oid AND objid = (key::bigint & 4294967295)::oid)
$$;

-- The instances alive now: members whose member lock is held.
CREATE FUNCTION syncd.live_members() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT name FROM syncd.members WHERE syncd.advisory_held(1937337955, hashtext(name)) ORDER BY name
$$;

-- Who owns what: each lease, and whether its holder still holds the lock.
CREATE VIEW syncd.stream_owners AS
    SELECT stream, holder, epoch, acquired_at, syncd.advisory_held(1937011309, hashtext(stream)) AS held
      FROM syncd.stream_leases;
