-- Least privilege for what connects besides syncd (README, "Database roles"). Two group roles
-- (NOLOGIN); operators create login users and grant the group: `CREATE ROLE workspace_api LOGIN
-- PASSWORD '…' IN ROLE syncd_service`. syncd itself keeps the role that owns every object.
--   syncd_service    the Node services (storage clients and the cutover client): DML on the domain
--                    tables of workspace and documentation, read-only on signals, the cutover mode
--                    and the client's registry row; no DDL, nothing else of syncd's tables.
--   syncd_reporting  dashboards and reports: read-only on reporting.*.
-- Roles are cluster-wide: created once, granted in every database that is migrated.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['syncd_service', 'syncd_reporting'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            IF NOT (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                RAISE EXCEPTION 'role % does not exist and % may not create it: run CREATE ROLE % NOLOGIN as an administrator, then syncd migrate again',
                    role_name, current_user, role_name;
            END IF;
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END $$;

-- Nobody but the owner creates objects in syncd's schemas (PostgreSQL 15 already revokes CREATE on
-- public; these are syncd's own).
REVOKE ALL ON SCHEMA syncd, workspace, documentation, signals, reporting FROM PUBLIC;

GRANT USAGE ON SCHEMA workspace, documentation, signals, syncd TO syncd_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA workspace, documentation TO syncd_service;
GRANT SELECT ON ALL TABLES IN SCHEMA signals TO syncd_service;
-- The cutover client follows its file's mode (syncd.cutover, LISTEN/NOTIFY needs no grant) and
-- reports itself in its own registry row (0080; its grant there found no role yet).
GRANT SELECT ON syncd.cutover TO syncd_service;
GRANT SELECT, INSERT, UPDATE ON syncd.cutover_clients TO syncd_service;
-- Tables later migrations add to the domain schemas get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA workspace, documentation
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO syncd_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA signals GRANT SELECT ON TABLES TO syncd_service;

-- A service's write fires syncd's capture trigger, which writes syncd.outbox and syncd.audit_log:
-- the trigger runs as their owner, so the service needs no privilege on them. The audit actor is
-- the session's login user (current_user would now be the trigger's owner).
ALTER FUNCTION syncd.capture_changes() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER TABLE syncd.audit_log ALTER COLUMN actor SET DEFAULT session_user;

GRANT USAGE ON SCHEMA reporting TO syncd_reporting;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO syncd_reporting;
ALTER DEFAULT PRIVILEGES IN SCHEMA reporting GRANT SELECT ON TABLES TO syncd_reporting;
-- reporting.signals_daily_between is a SQL function the planner inlines (that is what prunes
-- partitions), and an inlined function reads its table with the caller's rights: reporting reads
-- that one table too. SECURITY DEFINER would stop the inlining.
GRANT USAGE ON SCHEMA signals TO syncd_reporting;
GRANT SELECT ON signals.tp_capital_signals TO syncd_reporting;
