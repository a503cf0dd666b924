-- The capture triggers of 0002 with static SQL, so each session plans them once.
--
-- 0002's one trigger function built its statement with format() and EXECUTEd it: every statement
-- on a tracked table re-parsed and re-planned a three-part query (about 0.8 ms of a one-row edit,
-- update plus the ON CONFLICT's empty insert). Now `syncd.track_changes` writes out one trigger
-- function per operation, capture mode and key column, whose body holds that same query as static
-- SQL with the key column spelled in (quoted with %I when it is generated). PL/pgSQL compiles a
-- trigger function once per trigger and keeps the plans of its static statements for the session
-- (transition tables included), so tables sharing a key column and mode share a function but not
-- a plan. The table's name stays TG_TABLE_SCHEMA.TG_TABLE_NAME at run time, as 0002 had it: a
-- renamed table is recorded under its new name.
--
-- What is recorded is 0002's exactly (tests/integration/test_capture.py replays statements of
-- every kind through both on a table with hostile names and compares outbox and audit rows):
-- one outbox row (and, tracked with audit, one audit row) per row whose JSON without the
-- bookkeeping columns row_hash and synced_at changed, origin from syncd.origin else 'app',
-- changed_fields for updates only. Work that cannot change it is left out:
--   * an insert's or delete's row always differs from the missing one: no comparison;
--   * a statement that changed no rows (an INSERT … ON CONFLICT fires both the insert and the
--     update trigger, one of them with no rows) returns before running its query;
--   * changed_fields is computed for updates only, and not at all in outbox mode;
--   * the bookkeeping columns leave the JSON in one step (jsonb - text[]), not one copy each.
-- The triggers keep 0002's names and arguments (key column, mode): syncd.tracked_tables() and the
-- audit command read them from pg_trigger; the generated functions do not need them.

-- The body of the capture function for one operation ('ins', 'upd', 'del'), key column and mode.
CREATE FUNCTION syncd.capture_function_body(op text, key_col text, audit boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    bookkeeping constant text := $b$ - '{row_hash,synced_at}'::text[]$b$;
    changes text;
    nothing text;
    changed_fields text := $c$'{}'::text[]$c$;
    stmt text;
BEGIN
    IF op = 'ins' THEN
        nothing := 'NOT EXISTS (SELECT FROM new_rows)';
        changes := format($q$SELECT n.%1$I::text AS key, 'insert'::text AS op, NULL::jsonb AS before,
               to_jsonb(n.*)%2$s AS after
          FROM new_rows n$q$, key_col, bookkeeping);
    ELSIF op = 'del' THEN
        nothing := 'NOT EXISTS (SELECT FROM old_rows)';
        changes := format($q$SELECT o.%1$I::text AS key, 'delete'::text AS op, to_jsonb(o.*)%2$s AS before,
               NULL::jsonb AS after
          FROM old_rows o$q$, key_col, bookkeeping);
    ELSE
        nothing := 'NOT EXISTS (SELECT FROM new_rows)';
        changes := format($q$SELECT * FROM (
            SELECT coalesce(n.%1$I, o.%1$I)::text AS key,
                   CASE WHEN o.%1$I IS NULL THEN 'insert' WHEN n.%1$I IS NULL THEN 'delete'
                        ELSE 'update' END AS op,
                   to_jsonb(o.*)%2$s AS before, to_jsonb(n.*)%2$s AS after
              FROM old_rows o FULL JOIN new_rows n ON o.%1$I = n.%1$I) c
         WHERE before IS DISTINCT FROM after$q$, key_col, bookkeeping);
        changed_fields := $c$CASE WHEN op = 'update'
                    THEN coalesce((SELECT array_agg(f.key ORDER BY f.key) FROM jsonb_each(after) f
                                    WHERE f.value IS DISTINCT FROM before -> f.key), '{}')
                    ELSE '{}' END$c$;
    END IF;

    IF audit THEN
        stmt := format($q$WITH changes AS (
        %s),
         outbox AS (
        INSERT INTO syncd.outbox (table_name, key, op, before, after, origin)
        SELECT _table, key, op, before, after, _origin FROM changes)
    INSERT INTO syncd.audit_log (table_name, key, op, old, new, changed_fields, origin)
    SELECT _table, key, op, before, after, %s, _origin FROM changes$q$, changes, changed_fields);
    ELSE
        stmt := format($q$INSERT INTO syncd.outbox (table_name, key, op, before, after, origin)
    SELECT _table, key, op, before, after, _origin FROM (
        %s) changes$q$, changes);
    END IF;

    RETURN format($f$
DECLARE
    _table  constant text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    _origin constant text := coalesce(nullif(current_setting('syncd.origin', true), ''), 'app');
BEGIN
    IF %s THEN
        RETURN NULL;
    END IF;
    %s;
    RETURN NULL;
END$f$, nothing, stmt);
END $$;

-- Attaches the three statement-level capture triggers to a table, replacing any it had.
CREATE OR REPLACE FUNCTION syncd.track_changes(tbl regclass, key_col text, audit boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mode text := CASE WHEN audit THEN 'audit' ELSE 'outbox' END;
    op record;
    fn text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute
                    WHERE attrelid = tbl AND attname = key_col AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'syncd.track_changes: table % has no column %', tbl, quote_ident(key_col)
            USING ERRCODE = 'undefined_column';
    END IF;
    FOR op IN SELECT * FROM (VALUES
            ('ins', 'INSERT', 'NEW TABLE AS new_rows'),
            ('upd', 'UPDATE', 'OLD TABLE AS old_rows NEW TABLE AS new_rows'),
            ('del', 'DELETE', 'OLD TABLE AS old_rows')
        ) AS o(name, event, referencing)
    LOOP
        -- One function per operation, mode and key column; a key too long to spell in a name
        -- (63 bytes) is named by its digest.
        fn := format('capture_%s_%s_%s', op.name, mode, key_col);
        IF octet_length(fn) > 63 THEN
            fn := format('capture_%s_%s_%s', op.name, mode, md5(key_col));
        END IF;
        -- SECURITY DEFINER and search_path as 0091 gave 0002's function. A generic plan from the
        -- first call on: the query's shape does not depend on the origin or table name it is
        -- given, and a custom plan (PostgreSQL's choice for a statement's first five runs) costs
        -- what 0002's EXECUTE did. No JIT: the planner has no statistics for a transition table
        -- and estimates the update's full join at rows² / 200, so a statement of 20k rows passed
        -- jit_above_cost and compiled for about 0.7 s, and a plan kept from such a statement
        -- would compile again at every later one-row edit.
        EXECUTE format('CREATE OR REPLACE FUNCTION syncd.%I() RETURNS trigger LANGUAGE plpgsql '
                       'SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
                       'SET plan_cache_mode = force_generic_plan SET jit = off AS %L',
                       fn, syncd.capture_function_body(op.name, key_col, audit));
        EXECUTE format('DROP TRIGGER IF EXISTS syncd_capture_%s ON %s', op.name, tbl);
        EXECUTE format('CREATE TRIGGER syncd_capture_%s AFTER %s ON %s REFERENCING %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION syncd.%I(%L, %L)',
                       op.name, op.event, tbl, op.referencing, fn, key_col, mode);
    END LOOP;
END $$;

-- A trigger's arguments as text. pg_trigger.tgargs holds them NUL-separated; the escape encoding
-- spells each NUL as \000 but also a backslash as \\ and every non-ASCII byte as \nnn, which
-- decode() undoes per argument (0070 split without it, so a key column named `wörd` came back
-- as `w\303\266rd`).
CREATE FUNCTION syncd.trigger_args(args bytea, nargs smallint) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(convert_from(decode(a, 'escape'), current_setting('server_encoding')) ORDER BY i),
                    '{}')
      FROM unnest(string_to_array(encode(args, 'escape'), '\000')) WITH ORDINALITY u(a, i)
     WHERE i <= nargs
$$;

-- Every table with syncd's capture triggers and the key column its trigger was given.
CREATE OR REPLACE FUNCTION syncd.tracked_tables() RETURNS TABLE (table_name text, key_column text)
LANGUAGE sql STABLE AS $$
    SELECT n.nspname || '.' || c.relname,  -- as the capture trigger names it in syncd.outbox
           (syncd.trigger_args(t.tgargs, t.tgnargs))[1]
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE t.tgname = 'syncd_capture_ins'
     ORDER BY 1
$$;

-- Every table 0002's function captures is tracked again, with the key and mode it was given.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT tgrelid::regclass AS tbl, args[1] AS key_col, coalesce(args[2], '') = 'audit' AS audit
               FROM (SELECT tgrelid, syncd.trigger_args(tgargs, tgnargs) AS args
                       FROM pg_trigger
                      WHERE tgname = 'syncd_capture_ins' AND tgfoid = 'syncd.capture_changes'::regproc) a
    LOOP
        PERFORM syncd.track_changes(t.tbl, t.key_col, t.audit);
    END LOOP;
END $$;
DROP FUNCTION syncd.capture_changes();
