// A small Express service shaped like the Workspace API (its item and category routes, both storage
// clients). With LIBRARY_DB_STRATEGY (lowdb | postgresql) it picks one storage client at start, as
// the real service does (tests/e2e/test_workspace_conformance.py); without it, it adopts syncd's
// cutover client in its storage factory (tests/e2e/test_cutover_client_drill.py).
//
// env: DB_PATH (the LowDB file), DATABASE_URL, LIBRARY_DB_STRATEGY, STORAGE (pg | prisma),
// PRISMA_CLIENT (generated client.ts, with STORAGE=prisma), HOLD_BOUND_MS. Prints "listening PORT"
// once it serves.
import express from "express";
import { cutoverStore } from "../../../../clients/node/dist/src/index.js";
import { categoryRoutes } from "./category-routes.mjs";
import { LowdbStorage } from "./lowdb-storage.mjs";
import { PgStorage } from "./pg-storage.mjs";

async function postgresStorage() {
  if (process.env.STORAGE !== "prisma") return new PgStorage(process.env.DATABASE_URL);
  const { PrismaStorage } = await import("./prisma-storage.mjs");
  return PrismaStorage.create(process.env.PRISMA_CLIENT, process.env.DATABASE_URL);
}

// The storage factory: what a service adds to adopt the cutover client is this one call.
async function createStorage() {
  const strategy = process.env.LIBRARY_DB_STRATEGY;
  if (strategy) {
    const chosen = strategy === "lowdb" ? new LowdbStorage(process.env.DB_PATH) : await postgresStorage();
    await chosen.init();
    return chosen;
  }
  const storage = cutoverStore({
    file: "workspace",
    lowdb: new LowdbStorage(process.env.DB_PATH),
    postgres: await postgresStorage(),
    connection: process.env.DATABASE_URL,
    service: "workspace-api",
    holdBoundMs: Number(process.env.HOLD_BOUND_MS ?? 5000),
    log: (event, fields) => console.error(JSON.stringify({ event, ...fields })),
  });
  await storage.init();
  return storage;
}

const PRIORITIES = new Set(["low", "medium", "high", "critical"]);
const STATUSES = new Set(["new", "review", "in-progress", "completed", "rejected"]);
const UPDATABLE = new Set(["title", "description", "category", "priority", "status", "tags", "metadata"]);

function invalid(body, partial) {
  if (!partial && (typeof body.title !== "string" || !body.title.trim() || body.title.length > 200)) return "title";
  if (!partial && !/^[a-z0-9-]+$/.test(body.category ?? "")) return "category";
  if (body.priority !== undefined && !PRIORITIES.has(body.priority)) return "priority";
  if (body.status !== undefined && !STATUSES.has(body.status)) return "status";
  if (partial && Object.keys(body).some((k) => !UPDATABLE.has(k))) return "unknown key";
  return null;
}

function route(handler) {
  return async (req, res) => {
    try {
      await handler(req, res);
    } catch (error) {
      console.error(JSON.stringify({ event: "request failed", method: req.method, path: req.path, error: String(error) }));
      res.status(error.name === "HoldTimeout" ? 503 : 500).json({ success: false, message: String(error.message) });
    }
  };
}

const storage = await createStorage();
const app = express();
app.use(express.json());

app.get("/health", (_req, res) => res.json({ success: true, cutover: storage.cutover?.status() ?? null }));
app.get("/api/items", route(async (_req, res) => {
  const items = await storage.getItems();
  res.json({ success: true, data: items, count: items.length });
}));
app.get("/api/items/:id", route(async (req, res) => {
  const item = await storage.getItem(req.params.id);
  if (!item) return res.status(404).json({ success: false, message: "Item not found" });
  res.json({ success: true, data: item });
}));
app.post("/api/items", route(async (req, res) => {
  const bad = invalid(req.body, false);
  if (bad) return res.status(400).json({ success: false, message: `invalid ${bad}` });
  res.status(201).json({ success: true, data: await storage.createItem(req.body) });
}));
app.put("/api/items/:id", route(async (req, res) => {
  const bad = invalid(req.body, true);
  if (bad) return res.status(400).json({ success: false, message: `invalid ${bad}` });
  const item = await storage.updateItem(req.params.id, req.body);
  if (!item) return res.status(404).json({ success: false, message: "Item not found" });
  res.json({ success: true, data: item });
}));
app.delete("/api/items/:id", route(async (req, res) => {
  if (!(await storage.deleteItem(req.params.id))) return res.status(404).json({ success: false, message: "Item not found" });
  res.json({ success: true, message: "Item deleted" });
}));
app.get("/api/categories", route(async (_req, res) => {
  const categories = await storage.getCategories();
  res.json({ success: true, data: categories, count: categories.length });
}));

categoryRoutes(app, storage, route);

const server = app.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => {
  server.close(async () => {
    await storage.close();
    process.exit(0);
  });
});
