// Drives a Prisma 7 client (generated from schemas/prisma/schema.prisma) the way the Node services do,
// against a database syncd migrated and synced. Driven by tests/e2e/test_prisma_client.py.
//
// argv: <generated client.ts> <delegate,...> <new item id> <synced item id>; env DATABASE_URL.
// Prints one JSON object: every model's count and findMany length, and the rows it wrote.
import { pathToFileURL } from "node:url";
import { PrismaPg } from "@prisma/adapter-pg";

const [clientModule, delegateList, newId, syncedId] = process.argv.slice(2);
const { PrismaClient } = await import(pathToFileURL(clientModule).href);
const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL }) });

// BigInt and Bytes do not serialise to JSON on their own.
function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) => {
    if (typeof v === "bigint") return v.toString();
    if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
    return v;
  });
}

async function readEveryModel(): Promise<Record<string, { count: number; rows: number }>> {
  const seen: Record<string, { count: number; rows: number }> = {};
  for (const delegate of delegateList.split(",")) {
    const count = await prisma[delegate].count();
    const rows = await prisma[delegate].findMany();
    seen[delegate] = { count, rows: rows.length };
  }
  return seen;
}

// A plain service write: create one item and edit a synced one in one interactive transaction.
async function writeAsApp() {
  return prisma.$transaction(async (tx: typeof prisma) => {
    const created = await tx.workspaceItem.create({
      data: {
        id: newId,
        title: "Written by Prisma",
        category: "dashboard",
        priority: "high",
        tags: ["prisma"],
        createdAt: new Date("2026-01-02T03:04:05.678Z"),
        metadata: { via: "prisma" },
      },
    });
    const updated = await tx.workspaceItem.update({
      where: { id: syncedId },
      data: { status: "review", updatedAt: new Date(), updatedBy: "prisma-test" },
    });
    return { created, updated };
  });
}

// A service that names itself: `syncd.origin` is transaction-local, so it goes in the same transaction.
async function writeAsNamedService() {
  return prisma.$transaction(async (tx: typeof prisma) => {
    await tx.$executeRaw`SELECT set_config('syncd.origin', 'idea-bank', true)`;
    return tx.workspaceItem.update({ where: { id: newId }, data: { title: "Renamed by idea-bank" } });
  });
}

// The documentation relations (relationMode "prisma": declared, not foreign keys) resolve.
async function readRelations() {
  if (!delegateList.split(",").includes("documentationLink")) return [];
  return prisma.documentationLink.findMany({ include: { idea: { include: { files: true } }, system: true } });
}

try {
  const before = await readEveryModel();
  const relations = await readRelations();
  const app = await writeAsApp();
  const named = await writeAsNamedService();
  const audit = await prisma.auditLog.findMany({
    where: { tableName: "workspace.workspace_items", key: { in: [newId, syncedId] } },
    orderBy: { id: "asc" },
  });
  process.stdout.write(toJson({ before, relations, app, named, audit }) + "\n");
} finally {
  await prisma.$disconnect();
}
