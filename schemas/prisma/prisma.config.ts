// Prisma CLI configuration (Prisma 7): the schema next to this file, the URL from DATABASE_URL.
// Migrations are applied by `syncd migrate`, never by `prisma migrate deploy`; an existing database
// is baselined once with `prisma migrate resolve --applied 0_init`.
import { defineConfig, env } from "prisma/config";

export default defineConfig({
  schema: "schema.prisma",
  migrations: {
    path: "migrations",
  },
  datasource: {
    url: env("DATABASE_URL"),
  },
});
