-- Sync health per stream, read by dashboards and `syncd status`.
CREATE VIEW reporting.sync_health AS
SELECT c.source,
       c.stream,
       c.epoch,
       c.updated_at                                       AS last_commit_at,
       extract(epoch FROM now() - c.updated_at)::float8   AS seconds_since_commit,
       (SELECT count(*) FROM syncd.quarantine q
         WHERE q.stream = c.stream AND q.status = 'held') AS quarantined
  FROM syncd.checkpoints c;
