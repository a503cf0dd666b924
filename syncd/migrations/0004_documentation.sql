-- Documentation API LowDB `db.json`: systems, ideas, links, files (+ integer counters kept in the file).
-- The LowDB-era layout is known from docs only, so the enums accept both the Idea Bank values the docs
-- point to ("same shape as Idea Bank") and the successor API's values.

CREATE TABLE documentation.documentation_systems (
    id          text           PRIMARY KEY CHECK (id <> ''),
    name        text           NOT NULL CHECK (btrim(name) <> ''),
    short_name  text,
    description text,
    type        text           CHECK (type IN ('api', 'webapp', 'docs', 'tool')),
    url         text,
    host        text,
    port        integer        CHECK (port BETWEEN 1 AND 65535),
    status      text           NOT NULL DEFAULT 'unknown'
                               CHECK (status IN ('online', 'offline', 'error', 'unknown')),
    color       text,
    icon        text,
    created_at  timestamptz(3),
    updated_at  timestamptz(3),
    extra       jsonb          NOT NULL DEFAULT '{}',
    row_hash    bytea          NOT NULL DEFAULT '',
    synced_at   timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX documentation_systems_status_idx ON documentation.documentation_systems (status);

CREATE TABLE documentation.documentation_ideas (
    id          text           PRIMARY KEY CHECK (id <> ''),
    title       text           NOT NULL CHECK (btrim(title) <> ''),
    description text,
    category    text           NOT NULL CHECK (category ~ '^[a-z0-9_-]{1,100}$'),
    priority    text           NOT NULL DEFAULT 'medium'
                               CHECK (priority IN ('low', 'medium', 'high', 'critical', 'urgent')),
    status      text           NOT NULL DEFAULT 'new'
                               CHECK (status IN ('new', 'review', 'in-progress', 'completed', 'rejected',
                                                 'backlog', 'todo', 'in_progress', 'done')),
    tags        text[]         NOT NULL DEFAULT '{}',
    system_id   text,
    created_at  timestamptz(3) NOT NULL,
    updated_at  timestamptz(3),
    extra       jsonb          NOT NULL DEFAULT '{}',
    row_hash    bytea          NOT NULL DEFAULT '',
    synced_at   timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX documentation_ideas_status_idx ON documentation.documentation_ideas (status, category, priority);
CREATE INDEX documentation_ideas_system_idx ON documentation.documentation_ideas (system_id);

CREATE TABLE documentation.documentation_links (
    id          text           PRIMARY KEY CHECK (id <> ''),
    url         text,
    title       text,
    idea_id     text,
    system_id   text,
    created_at  timestamptz(3),
    extra       jsonb          NOT NULL DEFAULT '{}',
    row_hash    bytea          NOT NULL DEFAULT '',
    synced_at   timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX documentation_links_idea_idx ON documentation.documentation_links (idea_id);

CREATE TABLE documentation.documentation_files (
    id            text           PRIMARY KEY CHECK (id <> ''),
    idea_id       text,
    filename      text           NOT NULL CHECK (filename <> ''),
    original_name text,
    mime_type     text,
    size          bigint         CHECK (size >= 0),
    created_at    timestamptz(3),
    extra         jsonb          NOT NULL DEFAULT '{}',
    row_hash      bytea          NOT NULL DEFAULT '',
    synced_at     timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX documentation_files_idea_idx ON documentation.documentation_files (idea_id);

SELECT syncd.track_changes('documentation.documentation_systems', 'id', true);
SELECT syncd.track_changes('documentation.documentation_ideas', 'id', true);
SELECT syncd.track_changes('documentation.documentation_links', 'id', true);
SELECT syncd.track_changes('documentation.documentation_files', 'id', true);

-- Collections an operator adds by config alone (layout "generic"): key + jsonb document.
CREATE TABLE syncd.documents (
    collection text        NOT NULL,
    id         text        NOT NULL CHECK (id <> ''),
    doc        jsonb       NOT NULL,
    row_hash   bytea       NOT NULL DEFAULT '',
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, id)
);
