-- Links are listed per system (reporting.documentation_systems_overview, the Prisma relation
-- DocumentationSystem.links): index the reference like the other documentation references.
CREATE INDEX documentation_links_system_idx ON documentation.documentation_links (system_id);
