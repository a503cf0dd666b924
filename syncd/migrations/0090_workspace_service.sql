-- The Workspace API's own PostgreSQL strategy runs on these tables unchanged (see README,
-- "The Workspace API's own PostgreSQL strategy"). It inserts items without an id and categories without an id,
-- keys categories by `name` with `display_name`, `is_active`, `sort_order`, `created_at`,
-- `updated_at`, and expects the database to keep `updated_at` on every update.

-- Items: the database assigns what a service leaves out.
ALTER TABLE workspace.workspace_items
    ALTER COLUMN id SET DEFAULT gen_random_uuid()::text,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now();

-- Categories: the service's column names. LowDB's `active`/`display_order` map onto them in
-- syncd/tables.py; `color` (LowDB only) stays a column the service simply does not read.
ALTER TABLE workspace.workspace_categories RENAME COLUMN active TO is_active;
ALTER TABLE workspace.workspace_categories RENAME COLUMN display_order TO sort_order;
ALTER TABLE workspace.workspace_categories
    ADD COLUMN display_name text,
    -- Nullable: a mirrored LowDB category has no timestamps, and inventing one would add keys
    -- to the file's record on the way back. Rows a service inserts get now().
    ADD COLUMN created_at timestamptz(3) DEFAULT now(),
    ADD COLUMN updated_at timestamptz(3) DEFAULT now();
UPDATE workspace.workspace_categories SET display_name = name;
ALTER TABLE workspace.workspace_categories ALTER COLUMN display_name SET NOT NULL;
CREATE INDEX workspace_categories_name_idx ON workspace.workspace_categories (name);

-- A category a service inserts has no id: it gets its name (LowDB's own convention, id == name),
-- and its display name defaults to the name. A column DEFAULT cannot read another column.
CREATE FUNCTION workspace.category_defaults() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.id := coalesce(NEW.id, NEW.name);
    NEW.display_name := coalesce(NEW.display_name, NEW.name);
    RETURN NEW;
END $$;
CREATE TRIGGER category_defaults BEFORE INSERT ON workspace.workspace_categories
    FOR EACH ROW EXECUTE FUNCTION workspace.category_defaults();

-- updated_at follows every update by a service, like upstream's trigger, with two exceptions:
-- syncd's own writes (origin 'syncd') carry the file's value, which must land as it is, or
-- PostgreSQL would differ from the file it mirrors; and a writer that sets updated_at itself
-- (the Workspace API's updateItem, Prisma's @updatedAt) keeps the value it chose.
CREATE FUNCTION workspace.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd'
       AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON workspace.workspace_items
    FOR EACH ROW EXECUTE FUNCTION workspace.touch_updated_at();
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON workspace.workspace_categories
    FOR EACH ROW EXECUTE FUNCTION workspace.touch_updated_at();

-- The category reference rule (README, "Category references"). Upstream's schema has
-- `category REFERENCES categories(name) ON DELETE RESTRICT`. A mirror cannot have that foreign
-- key: the file is the truth in `mirror` and may hold items whose category is not (or not yet) in
-- its categories list (October files have no list at all), and a rejected batch would stop the
-- whole file. So the rule holds for every writer except syncd mirroring a file:
--   * an item inserted, or moved to another category, must name an existing category;
--   * a category still used by an item cannot be deleted (or renamed).
-- FOR KEY SHARE on the category makes a concurrent delete wait for the item's transaction, and
-- the delete's check then sees the item, as a real foreign key would.
CREATE FUNCTION workspace.item_category_exists() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd'
       AND (TG_OP = 'INSERT' OR NEW.category IS DISTINCT FROM OLD.category) THEN
        PERFORM 1 FROM workspace.workspace_categories WHERE name = NEW.category FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'category "%" does not exist', NEW.category
                USING ERRCODE = 'foreign_key_violation', TABLE = 'workspace_items', COLUMN = 'category';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER item_category_exists BEFORE INSERT OR UPDATE OF category ON workspace.workspace_items
    FOR EACH ROW EXECUTE FUNCTION workspace.item_category_exists();

CREATE FUNCTION workspace.category_not_in_use() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd'
       AND (TG_OP = 'DELETE' OR NEW.name IS DISTINCT FROM OLD.name)
       AND EXISTS (SELECT 1 FROM workspace.workspace_items WHERE category = OLD.name) THEN
        RAISE EXCEPTION 'category "%" is used by items', OLD.name
            USING ERRCODE = 'foreign_key_violation', TABLE = 'workspace_categories', COLUMN = 'name';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER category_not_in_use BEFORE DELETE OR UPDATE OF name ON workspace.workspace_categories
    FOR EACH ROW EXECUTE FUNCTION workspace.category_not_in_use();
