// The cutover client against a real, migrated PostgreSQL (CUTOVER_TEST_DSN, given by
// tests/e2e/test_node_client_package.py). The test plays syncd's side with SQL: it changes the mode
// and takes the writers' lock exclusively, exactly as syncd/cutover/handover.py does. The two storage
// clients are in-memory ones of the upstream method set: what is under test is the routing.
import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import pg from "pg";

import { type CutoverStore, HoldTimeout, cutoverStore } from "../src/index.js";

const DSN = process.env.CUTOVER_TEST_DSN;
if (!DSN) throw new Error("CUTOVER_TEST_DSN is not set: run these tests through pytest (tests/e2e/test_node_client_package.py)");

interface Item {
  id: string;
  title: string;
}

class MemoryStorage {
  items = new Map<string, Item>();
  inits = 0;
  async init(): Promise<void> {
    this.inits += 1;
  }
  async close(): Promise<void> {}
  async getItems(): Promise<Item[]> {
    return [...this.items.values()];
  }
  async getItem(id: string): Promise<Item | null> {
    return this.items.get(id) ?? null;
  }
  async createItem(item: Item): Promise<Item> {
    this.items.set(item.id, item);
    return item;
  }
  async updateItem(id: string, updates: Partial<Item>): Promise<Item | null> {
    const old = this.items.get(id);
    if (!old) return null;
    const updated = { ...old, ...updates };
    this.items.set(id, updated);
    return updated;
  }
  async deleteItem(id: string): Promise<boolean> {
    return this.items.delete(id);
  }
  async getCategories(): Promise<unknown[]> {
    return [];
  }
}

let admin: pg.Client;
let file: string;
let fileNumber = 0;
const open: CutoverStore<MemoryStorage>[] = [];

before(async () => {
  admin = new pg.Client({ connectionString: DSN });
  await admin.connect();
});

after(async () => {
  await Promise.all(open.map((s) => s.close()));
  await admin.end();
});

beforeEach(() => {
  fileNumber += 1;
  file = `test-file-${process.pid}-${fileNumber}`;
});

async function setMode(mode: string, newHandover = false): Promise<void> {
  await admin.query(
    `INSERT INTO syncd.cutover (name, mode) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET mode = $2, handover_id = syncd.cutover.handover_id + $3::int`,
    [file, mode, newHandover ? 1 : 0],
  );
}

async function start(options: { holdBoundMs?: number; shadowSettleMs?: number; connection?: pg.ClientConfig } = {}) {
  const lowdb = new MemoryStorage();
  const postgres = new MemoryStorage();
  const store = cutoverStore({ file, lowdb, postgres, connection: DSN!, service: "unit", pollMs: 200, ...options });
  open.push(store);
  await store.init();
  return { store, lowdb, postgres };
}

async function registry(store: CutoverStore<MemoryStorage>): Promise<Record<string, unknown>> {
  const { rows } = await admin.query("SELECT * FROM syncd.cutover_clients_live WHERE id = $1", [store.cutover.id]);
  assert.equal(rows.length, 1);
  return rows[0] as Record<string, unknown>;
}

async function eventually(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("mirror: reads and writes go to LowDB, and the client reports itself connected", async () => {
  await setMode("mirror");
  const { store, lowdb, postgres } = await start();
  await store.createItem({ id: "a", title: "in lowdb" });
  assert.deepEqual([...lowdb.items.keys()], ["a"]);
  assert.equal(postgres.items.size, 0);
  assert.deepEqual(await store.getItem("a"), { id: "a", title: "in lowdb" });
  await eventually(async () => (await registry(store))["writes"] === "lowdb", "the registry row");
  const row = await registry(store);
  assert.equal(row["mode"], "mirror");
  assert.equal(row["connected"], true);
  assert.equal(row["service"], "unit");
});

test("the grants of syncd_service are all a client needs", async () => {
  await setMode("mirror");
  // The test's login is a superuser: the session takes syncd_service's privileges, and only those.
  const { store, lowdb } = await start({ connection: { connectionString: DSN!, options: "-c role=syncd_service" } });
  await store.createItem({ id: "as-service", title: "as the service role" });
  assert.deepEqual([...lowdb.items.keys()], ["as-service"]);
  await eventually(async () => (await registry(store))["writes"] === "lowdb", "the registry row written as syncd_service");
  assert.equal((await registry(store))["connected"], true); // seen through pg_locks, visible to every role
  assert.equal(store.cutover.status().lastError, null);
});

test("a handover holds writes, lets go of the LowDB lock once acknowledged, and releases them to PostgreSQL", async () => {
  await setMode("mirror");
  const { store, lowdb, postgres } = await start();
  await setMode("switching", true);
  // syncd's side: the exclusive writers' lock is granted only once the client let go of it.
  await admin.query("SELECT pg_advisory_lock(syncd.writer_lock_key($1, 'lowdb'))", [file]);
  assert.equal((await registry(store))["handover_acked"], "1");
  let landed = false;
  const write = store.createItem({ id: "held", title: "held" }).then((item) => {
    landed = true;
    return item;
  });
  await eventually(() => store.cutover.status().writes === "held", "writes held");
  assert.equal(landed, false);
  await setMode("pg-primary");
  await write;
  await admin.query("SELECT pg_advisory_unlock(syncd.writer_lock_key($1, 'lowdb'))", [file]);
  assert.deepEqual([...postgres.items.keys()], ["held"]);
  assert.equal(lowdb.items.size, 0);
  assert.deepEqual(await store.getItems(), [{ id: "held", title: "held" }]); // reads follow to PostgreSQL
  assert.equal(store.cutover.status().holds, 1);
});

test("a write held past the bound fails with HoldTimeout and is written nowhere", async () => {
  await setMode("mirror");
  const { store, lowdb, postgres } = await start({ holdBoundMs: 300 });
  await setMode("switching", true);
  await eventually(() => store.cutover.status().writes === "held", "writes held");
  await assert.rejects(store.createItem({ id: "late", title: "late" }), HoldTimeout);
  assert.equal(lowdb.items.size + postgres.items.size, 0);
  await eventually(async () => (await registry(store))["holds_timed_out"] === "1", "the timed-out hold reported");
});

test("after switching back, the LowDB file is re-read before the client writes it again", async () => {
  await setMode("pg-primary");
  const { store, lowdb } = await start();
  assert.equal(lowdb.inits, 1);
  await setMode("switching-back", true);
  await eventually(() => store.cutover.status().writes === "held", "writes held");
  await setMode("mirror");
  await store.createItem({ id: "after", title: "after rollback" });
  assert.equal(lowdb.inits, 2);
  assert.deepEqual([...lowdb.items.keys()], ["after"]);
});

test("shadow counts a record PostgreSQL keeps disagreeing with, not one it catches up on", async () => {
  await setMode("shadow");
  const { store, lowdb, postgres } = await start({ shadowSettleMs: 400 });
  lowdb.items.set("wrong", { id: "wrong", title: "lowdb" });
  postgres.items.set("wrong", { id: "wrong", title: "pg" });
  lowdb.items.set("late", { id: "late", title: "same" });
  setTimeout(() => postgres.items.set("late", { id: "late", title: "same" }), 50);
  assert.equal((await store.getItems()).length, 2); // served by LowDB at once
  await eventually(() => store.cutover.status().shadowReads === 1, "the comparison settled");
  assert.deepEqual(store.cutover.status().shadowMismatches, { "workspace.workspace_items": 1 });
  await eventually(async () => (await registry(store))["shadow_reads"] === "1", "the comparison reported");
  assert.deepEqual((await registry(store))["shadow_mismatches"], { "workspace.workspace_items": 1 });
});
