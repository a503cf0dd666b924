-- TP Capital signals from QuestDB. Range-partitioned by month on `ts`; syncd creates partitions ahead
-- (signals.ensure_partitions) and before every batch that reaches a new month.
-- Natural key: `ingested_at` (µs, QuestDB server time); rows with NULL ingested_at (older than the
-- column) get a content-hash key. `signal_key` holds whichever applies.

CREATE TABLE signals.tp_capital_signals (
    ts           timestamptz      NOT NULL,
    signal_key   text             NOT NULL,
    channel      text,
    signal_type  text,
    asset        text,
    buy_min      double precision,
    buy_max      double precision,
    target_1     double precision,
    target_2     double precision,
    target_final double precision,
    stop         double precision,
    raw_message  text,
    source       text,
    ingested_at  timestamptz,
    deleted_at   timestamptz,
    row_hash     bytea            NOT NULL,
    synced_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, signal_key)
) PARTITION BY RANGE (ts);
CREATE INDEX tp_capital_signals_asset_ts_idx ON signals.tp_capital_signals (asset, ts DESC);
CREATE INDEX tp_capital_signals_channel_ts_idx ON signals.tp_capital_signals (channel, ts DESC);
CREATE INDEX tp_capital_signals_ingested_idx ON signals.tp_capital_signals (ingested_at);

-- Creates the monthly partitions of `tbl` covering [lo, hi]. Idempotent.
CREATE FUNCTION signals.ensure_partitions(tbl regclass, lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month   timestamptz := date_trunc('month', lo AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    created integer := 0;
    part    text;
    rel     text := (SELECT relname FROM pg_class WHERE oid = tbl);
    nsp     text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = tbl);
BEGIN
    WHILE month <= hi LOOP
        part := format('%s_p%s', rel, to_char(month AT TIME ZONE 'UTC', 'YYYYMM'));
        IF to_regclass(format('%I.%I', nsp, part)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           nsp, part, tbl, month, month + interval '1 month');
            created := created + 1;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

SELECT signals.ensure_partitions('signals.tp_capital_signals', now() - interval '1 month',
                                 now() + interval '3 months');

-- Versioned QuestDB tables, synced as the latest version per id. The bot `token` is never copied.
CREATE TABLE signals.telegram_bots (
    id          text        PRIMARY KEY CHECK (id <> ''),
    username    text,
    bot_type    text,
    description text,
    status      text        NOT NULL CHECK (status IN ('active', 'inactive', 'deleted')),
    created_at  timestamptz,
    updated_at  timestamptz NOT NULL,
    row_hash    bytea       NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE signals.telegram_channels (
    id           text        PRIMARY KEY CHECK (id <> ''),
    label        text,
    channel_id   bigint,
    channel_type text,
    description  text,
    status       text        NOT NULL CHECK (status IN ('active', 'inactive', 'deleted')),
    signal_count bigint,
    last_signal  timestamptz,
    created_at   timestamptz,
    updated_at   timestamptz NOT NULL,
    row_hash     bytea       NOT NULL,
    synced_at    timestamptz NOT NULL DEFAULT now()
);
