-- Workspace (Idea Bank) LowDB file: `items` (also the MVP `ideas` key) and `categories`.
-- ids are opaque TEXT: numeric strings, UUIDs and `item-<epoch>-<rand>` all occur upstream.
-- row_hash defaults to empty: rows the Node services write (pg-primary) have no source hash, so the
-- next LowDB diff after a rollback sees them as changed and re-hashes them from the file.

CREATE TABLE workspace.workspace_items (
    id          text           PRIMARY KEY CHECK (id <> ''),
    title       text           NOT NULL CHECK (btrim(title) <> ''),
    description text,
    category    text           NOT NULL CHECK (category ~ '^[a-z0-9-]{1,100}$'),
    priority    text           NOT NULL DEFAULT 'medium'
                               CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    status      text           NOT NULL DEFAULT 'new'
                               CHECK (status IN ('new', 'review', 'in-progress', 'completed', 'rejected')),
    tags        text[]         NOT NULL DEFAULT '{}',
    created_at  timestamptz(3) NOT NULL,
    updated_at  timestamptz(3),
    created_by  text,
    updated_by  text,
    metadata    jsonb          NOT NULL DEFAULT '{}',
    extra       jsonb          NOT NULL DEFAULT '{}',
    row_hash    bytea          NOT NULL DEFAULT '',
    synced_at   timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX workspace_items_category_status_idx ON workspace.workspace_items (category, status, created_at DESC);
CREATE INDEX workspace_items_priority_idx ON workspace.workspace_items (priority);
CREATE INDEX workspace_items_created_at_idx ON workspace.workspace_items (created_at);
CREATE INDEX workspace_items_tags_idx ON workspace.workspace_items USING gin (tags);

CREATE TABLE workspace.workspace_categories (
    id            text        PRIMARY KEY CHECK (id <> ''),
    name          text        NOT NULL CHECK (name ~ '^[a-z0-9-]{1,100}$'),
    description   text,
    color         text,
    display_order integer,
    active        boolean     NOT NULL DEFAULT true,
    extra         jsonb       NOT NULL DEFAULT '{}',
    row_hash      bytea       NOT NULL DEFAULT '',
    synced_at     timestamptz NOT NULL DEFAULT now()
);

SELECT syncd.track_changes('workspace.workspace_items', 'id', true);
SELECT syncd.track_changes('workspace.workspace_categories', 'id', true);
