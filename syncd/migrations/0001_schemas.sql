-- Schemas owned by syncd. Domain schemas follow upstream's naming (Prisma multi-schema).
CREATE SCHEMA IF NOT EXISTS syncd;
CREATE SCHEMA IF NOT EXISTS workspace;
CREATE SCHEMA IF NOT EXISTS documentation;
CREATE SCHEMA IF NOT EXISTS signals;
CREATE SCHEMA IF NOT EXISTS reporting;
