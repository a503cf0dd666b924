-- The capture tables' indexes fitted to the queries that read them: `syncd explain`'s outbox
-- events of one record get an index that holds the record's key, and syncd.audit_log's time
-- index becomes a BRIN.
--
-- Every row a capture trigger records goes to syncd.outbox and syncd.audit_log and to six btree
-- indexes beside them: a first load of 500k items writes each of them 500k times. Measured on the
-- real capture triggers (COPY of 100k workspace items in parts of 20k, the backend's CPU time and
-- pg_current_wal_lsn() before and after, variants interleaved, four rounds after a warm-up, on a
-- shared 2-core machine): as 0002 and 0040 left them 3.30-4.22 s CPU and 276 MB of WAL; with the
-- four secondary capture indexes dropped 2.84-3.31 s and 243 MB, which bounds what any index
-- change could save. What each index serves decides what may change:
--   * audit_log_record_idx (table_name, key, id): `syncd audit` and `syncd explain`, one
--     record's history newest first. Kept.
--   * outbox_txid_idx (txid): the relay (txid >= its position), the reverse path and the
--     foreign-write check (a txid range per table), syncd.prune_outbox() (txid < the slowest
--     consumer). Kept as a btree: the outbox is a queue whose pruned rows' space later rows reuse,
--     and a BRIN range's summary only ever widens, so once pruned space was reused every prune
--     would match most of the table's ranges.
--   * outbox_table_id_idx (table_name, id) served no query: `syncd explain` asks for one record's
--     newest events (table_name = $1 AND key = $2 ORDER BY id DESC LIMIT n), and at 100k outbox
--     rows PostgreSQL read the whole table and sorted rather than walk a table's ids filtering the
--     key. Replaced by outbox_record_idx (table_name, key, id), audit_log_record_idx's twin, which
--     answers it from the index; same WAL per captured row (270 MB either way), CPU within noise.
--   * audit_log_at_idx (at): no query of syncd, its clients or its tests reads it; it serves an
--     operator's time-range question ("what changed between 10:00 and 10:05"). The audit log is
--     permanent and append-only (nothing updates or deletes it; the service role may not), and `at`
--     is the writing transaction's start, so it follows the rows' physical order and a BRIN
--     answers those ranges reading only the matching block ranges: 6 MB less WAL per 100k
--     captured rows (276 -> 270 MB, every run), CPU within noise.
-- tests/integration/test_capture_indexes.py EXPLAINs each of these queries at 100k rows.
DROP INDEX syncd.outbox_table_id_idx;
CREATE INDEX outbox_record_idx ON syncd.outbox (table_name, key, id);

DROP INDEX syncd.audit_log_at_idx;
CREATE INDEX audit_log_at_idx ON syncd.audit_log USING brin (at);
