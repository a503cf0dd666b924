-- The rollup triggers of 0055 with plans kept and early exits.
--
-- 0055's one trigger function asked reporting.signal_fold_statements for its statements and
-- EXECUTEd them: every statement the signals table saw re-planned one to three large queries
-- (about 10 ms), which made a per-row writer (an executemany, upstream's one-row INSERTs) slow, and
-- it ran them even when the statement changed nothing they count. Now each operation has its own
-- trigger function whose body holds those same statements as static SQL, written out once here from
-- signal_fold_statements: PL/pgSQL prepares a static statement once per session and reuses its plan
-- (transition tables included), and each function first returns when there is nothing to fold:
--   INSERT, DELETE  no rows in the transition table (an INSERT … ON CONFLICT that only updated, or
--                   updated nothing, still fires the INSERT trigger, with no rows);
--   UPDATE          the new rows bring exactly what the old rows took: the multisets of the
--                   columns the rollups read are equal (an UPDATE pairs each old row with one new
--                   row, so `new EXCEPT ALL old` empty means equal), e.g. a re-applied version
--                   that changed only raw_message, target_final's value, synced_at or row_hash.
-- The folded figures are the same as 0055's; tests/integration/test_reporting_rollups.py compares
-- the views with full scans after random statements of every kind.

DO $$
DECLARE
    -- What the rollups read of a row: the day and the bounds (ts), the groups, liveness, the
    -- presence of each level, and the values the two averages take.
    read_columns text := 'ts, channel, asset, source, deleted_at IS NULL, buy_min, buy_max, target_1, '
                         'target_2 IS NULL, target_final IS NULL, stop';
    op record;
    body text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'signal_rollups_ins' AND tgrelid = 'signals.tp_capital_signals'::regclass) THEN
        RETURN;  -- a TimescaleDB hypertable (0055 installed no rollups): nothing to replace
    END IF;
    FOR op IN SELECT * FROM (VALUES
            ('insert', 'INSERT', 'NEW TABLE AS new_rows', 'SELECT 1 AS sign, * FROM new_rows', false,
             'NOT EXISTS (SELECT FROM new_rows)'),
            ('update', 'UPDATE', 'OLD TABLE AS old_rows NEW TABLE AS new_rows',
             'SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1, * FROM old_rows', true,
             format('NOT EXISTS (SELECT %1$s FROM new_rows EXCEPT ALL SELECT %1$s FROM old_rows)', read_columns)),
            ('delete', 'DELETE', 'OLD TABLE AS old_rows', 'SELECT -1 AS sign, * FROM old_rows', true,
             'NOT EXISTS (SELECT FROM old_rows)')
        ) AS o(name, event, referencing, src, removes, nothing)
    LOOP
        SELECT format(E'DECLARE\n    folded bigint;\nBEGIN\n    IF %s THEN\n        RETURN NULL;\n    END IF;\n%s\n'
                      || E'    RETURN NULL;\nEND', op.nothing, string_agg(s || E'\n    INTO folded;', E'\n'))
          INTO body
          FROM reporting.signal_fold_statements(op.src, op.removes) AS s;
        EXECUTE format('CREATE FUNCTION reporting.signal_rollups_%s() RETURNS trigger LANGUAGE plpgsql AS %L',
                       op.name, body);
        EXECUTE format('DROP TRIGGER signal_rollups_%s ON signals.tp_capital_signals', left(op.name, 3));
        EXECUTE format('CREATE TRIGGER signal_rollups_%s AFTER %s ON signals.tp_capital_signals REFERENCING %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION reporting.signal_rollups_%s()',
                       left(op.name, 3), op.event, op.referencing, op.name);
    END LOOP;
    DROP FUNCTION reporting.signal_rollups_trigger();
END $$;
