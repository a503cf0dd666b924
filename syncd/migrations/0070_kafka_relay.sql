-- Outbox relay to Kafka: the tables the capture triggers track and the key column of each, so the
-- relay can snapshot each one into its topic before it relays changes.

-- Every table with syncd's capture triggers and the key column its trigger was given.
CREATE FUNCTION syncd.tracked_tables() RETURNS TABLE (table_name text, key_column text)
LANGUAGE sql STABLE AS $$
    SELECT n.nspname || '.' || c.relname,  -- as the capture trigger names it in syncd.outbox
           -- tgargs is NUL-separated; the escape encoding spells NUL as \000
           split_part(encode(t.tgargs, 'escape'), '\000', 1)
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE t.tgname = 'syncd_capture_ins'
     ORDER BY 1
$$;
