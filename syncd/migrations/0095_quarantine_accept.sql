-- `syncd quarantine accept`: a held record resolved with a stated coercion (README, "Quarantine").
-- The accepted row keeps the operator's values (`coercion`, source keys → values as the file would
-- hold them) and the hash of the record version they were stated for (`raw_hash`, the source's
-- row_hash of it): the LowDB stream, verify and the reverse path's foreign-write check apply the
-- coercion to that version for as long as the file holds it. `resolved_by` is who resolved a row.
ALTER TABLE syncd.quarantine DROP CONSTRAINT quarantine_status_check;
ALTER TABLE syncd.quarantine ADD CONSTRAINT quarantine_status_check
    CHECK (status IN ('held', 'replayed', 'discarded', 'accepted'));
ALTER TABLE syncd.quarantine
    ADD COLUMN coercion    jsonb,
    ADD COLUMN raw_hash    bytea,
    ADD COLUMN resolved_by text,
    ADD CONSTRAINT quarantine_accepted_check
        CHECK ((status = 'accepted') = (coercion IS NOT NULL AND raw_hash IS NOT NULL AND key IS NOT NULL));
CREATE INDEX quarantine_accepted_idx ON syncd.quarantine (stream, table_name, key, id) WHERE status = 'accepted';

-- An operator's resolution of a held record is part of that record's history: `accept` (old: the
-- held record, new: it with the stated values, changed_fields: the fields stated) and `discard`
-- (old: the held record) are audit rows beside the row changes the capture trigger writes.
ALTER TABLE syncd.audit_log DROP CONSTRAINT audit_log_op_check;
ALTER TABLE syncd.audit_log ADD CONSTRAINT audit_log_op_check
    CHECK (op IN ('insert', 'update', 'delete', 'accept', 'discard'));
