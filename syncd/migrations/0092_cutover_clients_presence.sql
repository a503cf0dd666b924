-- A cutover client is connected while it holds an advisory lock on its own id (syncd.client_lock_key),
-- taken by its session when it registers. pg_locks shows every session's locks to every role, while
-- pg_stat_activity hides another login's backend_start unless one has pg_read_all_stats: with the
-- services on their own logins (in syncd_service) and syncd on its own, 0080's check saw no client.
CREATE FUNCTION syncd.client_lock_key(id text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT hashtextextended('syncd-client:' || id, 0) $$;

-- True while session `pid` holds the advisory lock `key` (a bigint key shows as classid:objid, objsubid 1).
CREATE FUNCTION syncd.holds_advisory_lock(pid integer, key bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid = holds_advisory_lock.pid
           AND l.classid::bigint = (key >> 32) & 4294967295 AND l.objid::bigint = key & 4294967295)
$$;

DROP VIEW syncd.cutover_clients_live;
ALTER TABLE syncd.cutover_clients DROP COLUMN backend_start;

CREATE VIEW syncd.cutover_clients_live AS
SELECT c.*,
       c.closed_at IS NULL AND syncd.holds_advisory_lock(c.backend_pid, syncd.client_lock_key(c.id)) AS connected
  FROM syncd.cutover_clients c;
