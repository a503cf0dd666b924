-- Cutover support: the reverse path's outbox position, the mirror-mode guard, outbox pruning.

-- A consumer's position is a transaction-id watermark, not an outbox id: ids are taken at insert
-- time but become visible at commit, so a reader acking "up to id N" would skip a slower
-- transaction's lower id. Every transaction below a snapshot's xmin has ended, so reading
-- `txid < xmin` in txid order never leaves a gap behind it.
ALTER TABLE syncd.outbox_consumers RENAME COLUMN acked_id TO acked_txid;
ALTER TABLE syncd.outbox_consumers
    ADD COLUMN tables     text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX outbox_txid_idx ON syncd.outbox (txid);

-- The lowest transaction id that may still be running: everything below it is final.
CREATE FUNCTION syncd.settled_txid() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint $$;

-- Called in every LowDB→PG apply transaction: aborts it unless the file is still in `mirror`.
-- FOR SHARE makes `promote` (an UPDATE of the row) wait for a batch in flight, and a batch
-- started after `promote` committed fails here, so no LowDB version lands after the switch.
CREATE FUNCTION syncd.require_mirror(file text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_mode text;
BEGIN
    INSERT INTO syncd.cutover (name) VALUES (file) ON CONFLICT (name) DO NOTHING;
    SELECT mode INTO current_mode FROM syncd.cutover WHERE name = file FOR SHARE;
    IF current_mode <> 'mirror' THEN
        RAISE EXCEPTION 'cutover: % is in mode %, LowDB changes are no longer applied', file, current_mode
            USING ERRCODE = 'SY002';
    END IF;
END $$;

-- Deletes outbox rows every consumer has read (all settled rows when no consumer is registered).
CREATE FUNCTION syncd.prune_outbox() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    below  bigint := least(syncd.settled_txid(), (SELECT min(acked_txid) FROM syncd.outbox_consumers));
    pruned bigint;
BEGIN
    DELETE FROM syncd.outbox WHERE txid < below;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;
