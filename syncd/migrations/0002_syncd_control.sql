-- syncd's control tables: checkpoints, fencing, outbox, audit, quarantine, cutover.

-- One row. The leader bumps `epoch` when it takes the advisory lock; every apply transaction
-- holds this row FOR SHARE and compares epochs, so a deposed leader cannot commit (fencing).
CREATE TABLE syncd.leader (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    epoch       bigint      NOT NULL DEFAULT 0,
    holder      text,
    acquired_at timestamptz
);
INSERT INTO syncd.leader (id, epoch) VALUES (1, 0);

CREATE TABLE syncd.checkpoints (
    source     text        NOT NULL,
    stream     text        NOT NULL,
    position   jsonb       NOT NULL,
    epoch      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream)
);

-- Transactional outbox: one row per real change, written by statement-level triggers.
-- Pruned once every registered consumer has acknowledged it.
CREATE TABLE syncd.outbox (
    id         bigserial   PRIMARY KEY,
    table_name text        NOT NULL,
    key        text        NOT NULL,
    op         text        NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    before     jsonb,
    after      jsonb,
    origin     text        NOT NULL,
    txid       bigint      NOT NULL DEFAULT txid_current(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_table_id_idx ON syncd.outbox (table_name, id);

CREATE TABLE syncd.outbox_consumers (
    name     text   PRIMARY KEY,
    acked_id bigint NOT NULL DEFAULT 0
);

-- Permanent history of the Workspace and Documentation tables.
CREATE TABLE syncd.audit_log (
    id             bigserial   PRIMARY KEY,
    table_name     text        NOT NULL,
    key            text        NOT NULL,
    op             text        NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    old            jsonb,
    new            jsonb,
    changed_fields text[]      NOT NULL DEFAULT '{}',
    origin         text        NOT NULL,
    actor          text        NOT NULL DEFAULT current_user,
    txid           bigint      NOT NULL DEFAULT txid_current(),
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_record_idx ON syncd.audit_log (table_name, key, id);
CREATE INDEX audit_log_at_idx ON syncd.audit_log (at);

CREATE TABLE syncd.quarantine (
    id          bigserial   PRIMARY KEY,
    source      text        NOT NULL,
    stream      text        NOT NULL,
    table_name  text        NOT NULL,
    key         text,
    raw         jsonb       NOT NULL,
    reason      text        NOT NULL,
    position    jsonb       NOT NULL DEFAULT '{}',
    status      text        NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'replayed', 'discarded')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX quarantine_held_idx ON syncd.quarantine (stream, table_name, key) WHERE status = 'held';

CREATE TABLE syncd.cutover (
    name       text        PRIMARY KEY,
    mode       text        NOT NULL DEFAULT 'mirror' CHECK (mode IN ('mirror', 'pg-primary', 'retired')),
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text        NOT NULL DEFAULT current_user
);

CREATE TABLE syncd.cutover_log (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL,
    from_mode  text,
    to_mode    text        NOT NULL,
    actor      text        NOT NULL DEFAULT current_user,
    reason     text,
    at         timestamptz NOT NULL DEFAULT now()
);

-- Aborts the calling transaction unless `expected` is still the leader epoch.
-- FOR SHARE makes a takeover (UPDATE of the row) wait until this transaction ends.
CREATE FUNCTION syncd.fence(expected bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_epoch bigint;
BEGIN
    SELECT epoch INTO current_epoch FROM syncd.leader WHERE id = 1 FOR SHARE;
    IF current_epoch IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'fenced: epoch % is stale, leader epoch is %', expected, current_epoch
            USING ERRCODE = 'SY001';
    END IF;
END $$;

-- Statement-level capture: one set-based INSERT per statement, from the transition tables.
-- TG_ARGV[0] = key column, TG_ARGV[1] = 'audit' to also write the permanent audit log.
CREATE FUNCTION syncd.capture_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    key_col text := TG_ARGV[0];
    audit   boolean := coalesce(TG_ARGV[1], '') = 'audit';
    tbl     text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    origin  text := coalesce(nullif(current_setting('syncd.origin', true), ''), 'app');
    rows_sql text;
BEGIN
    -- Bookkeeping columns are not part of a change: an update that touches only them is no event.
    IF TG_OP = 'INSERT' THEN
        rows_sql := format(
            'SELECT n.%1$I::text AS key, ''insert'' AS op, NULL::jsonb AS before,
                    to_jsonb(n) - ''row_hash'' - ''synced_at'' AS after FROM new_rows n', key_col);
    ELSIF TG_OP = 'DELETE' THEN
        rows_sql := format(
            'SELECT o.%1$I::text, ''delete'', to_jsonb(o) - ''row_hash'' - ''synced_at'', NULL::jsonb
               FROM old_rows o', key_col);
    ELSE
        rows_sql := format(
            'SELECT coalesce(n.%1$I, o.%1$I)::text,
                    CASE WHEN o.%1$I IS NULL THEN ''insert'' WHEN n.%1$I IS NULL THEN ''delete''
                         ELSE ''update'' END,
                    to_jsonb(o) - ''row_hash'' - ''synced_at'', to_jsonb(n) - ''row_hash'' - ''synced_at''
               FROM old_rows o FULL JOIN new_rows n ON o.%1$I = n.%1$I', key_col);
    END IF;

    EXECUTE format(
        'WITH changes AS (SELECT * FROM (%s) c(key, op, before, after) WHERE before IS DISTINCT FROM after),
              outbox AS (
                INSERT INTO syncd.outbox (table_name, key, op, before, after, origin)
                SELECT %L, key, op, before, after, %L FROM changes)
         INSERT INTO syncd.audit_log (table_name, key, op, old, new, changed_fields, origin)
         SELECT %L, key, op, before, after,
                coalesce((SELECT array_agg(f.key ORDER BY f.key)
                            FROM jsonb_each(coalesce(after, ''{}'')) f
                           WHERE before IS NOT NULL AND after IS NOT NULL
                             AND f.value IS DISTINCT FROM before -> f.key), ''{}''),
                %L
           FROM changes WHERE %L',
        rows_sql, tbl, origin, tbl, origin, audit);
    RETURN NULL;
END $$;

-- Attaches the three statement-level capture triggers to a table.
CREATE FUNCTION syncd.track_changes(tbl regclass, key_col text, audit boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mode text := CASE WHEN audit THEN 'audit' ELSE 'outbox' END;
BEGIN
    EXECUTE format('CREATE TRIGGER syncd_capture_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_changes(%L, %L)', tbl, key_col, mode);
    EXECUTE format('CREATE TRIGGER syncd_capture_upd AFTER UPDATE ON %s
                    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_changes(%L, %L)', tbl, key_col, mode);
    EXECUTE format('CREATE TRIGGER syncd_capture_del AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_changes(%L, %L)', tbl, key_col, mode);
END $$;
