// The Workspace API's LowDB strategy, as upstream-workspace-api.md §2 describes it: the file is read
// once at init() into memory; every write rewrites the whole file from memory (lowdb@7: temp file +
// rename). init() again re-reads the file, which is what the cutover client calls after a rollback.
import { Low } from "lowdb";
import { JSONFile } from "lowdb/node";

import { newItem } from "./new-item.mjs";

const DEFAULT_CATEGORIES = ["feature", "bug", "improvement", "documentation", "research", "other"].map((name, i) => ({
  id: name,
  name,
  description: `${name} ideas`,
  color: "#888888",
  display_order: i + 1,
  active: true,
}));

export class LowdbStorage {
  constructor(path) {
    this.path = path;
    this.db = null;
  }

  async init() {
    const db = new Low(new JSONFile(this.path), { items: [], categories: [] });
    await db.read();
    db.data.items ??= [];
    if (!db.data.categories?.length) {
      db.data.categories = DEFAULT_CATEGORIES.map((c) => ({ ...c }));
      await db.write();
    }
    this.db = db;
  }

  async getItems() {
    return [...this.db.data.items];
  }

  async getItem(id) {
    return this.db.data.items.find((item) => item.id === id) ?? null;
  }

  async createItem(item) {
    const record = newItem(item, new Date().toISOString());
    this.db.data.items.push(record);
    await this.db.write();
    return record;
  }

  async updateItem(id, updates) {
    const index = this.db.data.items.findIndex((item) => item.id === id);
    if (index < 0) return null;
    const record = { ...this.db.data.items[index], ...updates, updatedAt: new Date().toISOString() };
    this.db.data.items[index] = record;
    await this.db.write();
    return record;
  }

  async deleteItem(id) {
    const before = this.db.data.items.length;
    this.db.data.items = this.db.data.items.filter((item) => item.id !== id);
    if (this.db.data.items.length === before) return false;
    await this.db.write();
    return true;
  }

  async getCategories() {
    return this.db.data.categories.filter((c) => c.active !== false);
  }

  async close() {}
}
