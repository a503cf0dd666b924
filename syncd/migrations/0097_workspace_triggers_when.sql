-- The Workspace tables' BEFORE ROW triggers of 0090 with WHEN conditions: a row the trigger
-- function would leave as it is never enters PL/pgSQL. Each condition is the test the function
-- itself starts with (a BEFORE trigger's WHEN is evaluated just before the function would run,
-- so it sees what the function would), which makes every writer's outcome 0090's; the functions
-- keep their tests for a caller without the condition. What it saves is a PL/pgSQL call per row
-- of syncd's own writes (origin 'syncd'), which every one of these functions passes through
-- unchanged: a first load of 500k items made 500k calls of item_category_exists.
-- A trigger on INSERT cannot name OLD, and one on DELETE cannot name NEW, in its WHEN: the two
-- triggers that fire on both keep their OLD/NEW tests inside the function.

DROP TRIGGER category_defaults ON workspace.workspace_categories;
CREATE TRIGGER category_defaults BEFORE INSERT ON workspace.workspace_categories
    FOR EACH ROW WHEN (NEW.id IS NULL OR NEW.display_name IS NULL)
    EXECUTE FUNCTION workspace.category_defaults();

DROP TRIGGER touch_updated_at ON workspace.workspace_items;
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON workspace.workspace_items
    FOR EACH ROW WHEN (current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd'
                       AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION workspace.touch_updated_at();
DROP TRIGGER touch_updated_at ON workspace.workspace_categories;
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON workspace.workspace_categories
    FOR EACH ROW WHEN (current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd'
                       AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION workspace.touch_updated_at();

DROP TRIGGER item_category_exists ON workspace.workspace_items;
CREATE TRIGGER item_category_exists BEFORE INSERT OR UPDATE OF category ON workspace.workspace_items
    FOR EACH ROW WHEN (current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd')
    EXECUTE FUNCTION workspace.item_category_exists();

DROP TRIGGER category_not_in_use ON workspace.workspace_categories;
CREATE TRIGGER category_not_in_use BEFORE DELETE OR UPDATE OF name ON workspace.workspace_categories
    FOR EACH ROW WHEN (current_setting('syncd.origin', true) IS DISTINCT FROM 'syncd')
    EXECUTE FUNCTION workspace.category_not_in_use();
