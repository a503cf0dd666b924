-- The cutover client (clients/node) and syncd's side of its handshake (README, "Switching the Node
-- services"): the modes `shadow`, `switching` and `switching-back`, a notification on every mode
-- change, the writer locks, and the registry in which every connected client reports what it sees.

ALTER TABLE syncd.cutover DROP CONSTRAINT cutover_mode_check;
ALTER TABLE syncd.cutover
    ADD CONSTRAINT cutover_mode_check
        CHECK (mode IN ('mirror', 'shadow', 'switching', 'pg-primary', 'switching-back', 'retired')),
    -- Each handover (the `switching` of a promote, the `switching-back` of a rollback) has a new
    -- id; a client acknowledges it by id, so an old acknowledgement never counts for a new one.
    ADD COLUMN handover_id bigint NOT NULL DEFAULT 0,
    -- The mode an aborted (or orphaned) handover returns to.
    ADD COLUMN handover_from text;

-- Clients LISTEN on this channel; the payload is the file's name. A poll covers a lost notification.
CREATE FUNCTION syncd.notify_cutover() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('syncd_cutover', NEW.name);
    RETURN NULL;
END $$;
CREATE TRIGGER notify_cutover AFTER INSERT OR UPDATE OF mode ON syncd.cutover
    FOR EACH ROW EXECUTE FUNCTION syncd.notify_cutover();

-- The advisory-lock key of one file's writers of one store ('lowdb' or 'pg'). A client holds it
-- shared while it may write that store; a handover takes it exclusively, so it is granted only once
-- every client has stopped writing the old store. Computed here so every language gets the same key.
CREATE FUNCTION syncd.writer_lock_key(file text, store text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT hashtextextended('syncd-writers:' || store || ':' || file, 0) $$;

-- Forward batches keep flowing in `shadow` (reads are compared, the file is still the truth) and in
-- `switching` (the handover applies the file's last version before it flips).
CREATE OR REPLACE FUNCTION syncd.require_mirror(file text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_mode text;
BEGIN
    INSERT INTO syncd.cutover (name) VALUES (file) ON CONFLICT (name) DO NOTHING;
    SELECT mode INTO current_mode FROM syncd.cutover WHERE name = file FOR SHARE;
    IF current_mode NOT IN ('mirror', 'shadow', 'switching') THEN
        RAISE EXCEPTION 'cutover: % is in mode %, LowDB changes are no longer applied', file, current_mode
            USING ERRCODE = 'SY002';
    END IF;
END $$;

-- One row per cutover client, written by the client itself over its lock session. A client is
-- connected while that session lives (`backend_pid` + `backend_start` in pg_stat_activity).
CREATE TABLE syncd.cutover_clients (
    id                text             PRIMARY KEY,
    name              text             NOT NULL,
    service           text             NOT NULL,
    host              text             NOT NULL,
    pid               integer          NOT NULL,
    backend_pid       integer          NOT NULL,
    backend_start     timestamptz      NOT NULL,
    -- The mode the client routes by, and where its writes go right now.
    mode              text             NOT NULL,
    writes            text             NOT NULL CHECK (writes IN ('lowdb', 'pg', 'held')),
    handover_acked    bigint           NOT NULL DEFAULT 0,
    hold_bound_ms     integer          NOT NULL,
    holds             bigint           NOT NULL DEFAULT 0,
    holds_timed_out   bigint           NOT NULL DEFAULT 0,
    hold_ms_max       double precision NOT NULL DEFAULT 0,
    hold_ms_total     double precision NOT NULL DEFAULT 0,
    -- Since the client last entered `shadow`: reads compared, and mismatches per table.
    shadow_reads      bigint           NOT NULL DEFAULT 0,
    shadow_mismatches jsonb            NOT NULL DEFAULT '{}',
    last_error        text,
    started_at        timestamptz      NOT NULL DEFAULT now(),
    seen_at           timestamptz      NOT NULL DEFAULT now(),
    closed_at         timestamptz
);
CREATE INDEX cutover_clients_name_idx ON syncd.cutover_clients (name);

CREATE VIEW syncd.cutover_clients_live AS
SELECT c.*,
       c.closed_at IS NULL AND EXISTS (
           SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.backend_pid AND a.backend_start = c.backend_start
       ) AS connected
  FROM syncd.cutover_clients c;

-- The services connect as syncd_service (where that role exists): they read their mode and write
-- their own registry row.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'syncd_service') THEN
        GRANT SELECT ON syncd.cutover TO syncd_service;
        GRANT SELECT, INSERT, UPDATE ON syncd.cutover_clients TO syncd_service;
    END IF;
END $$;
