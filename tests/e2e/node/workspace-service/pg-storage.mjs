// The Workspace API's PostgreSQL strategy (node-postgres), as upstream-workspace-api.md §3 describes
// it, on syncd's tables. Rows map to the API shape with the snake_case columns and the camelCase keys
// side by side. createItem sends no id: the table assigns it, as upstream's strategy expects.
import pg from "pg";

import { newItem } from "./new-item.mjs";

const COLUMNS = "id, title, description, category, priority, status, tags, created_at, updated_at, created_by, updated_by, metadata";
const CAMEL = { createdAt: "created_at", updatedAt: "updated_at", createdBy: "created_by", updatedBy: "updated_by" };
const WRITABLE = new Set(["title", "description", "category", "priority", "status", "tags", "metadata", ...Object.values(CAMEL)]);

export function toApi(row) {
  return {
    ...row,
    id: String(row.id),
    tags: row.tags ?? [],
    metadata: row.metadata ?? {},
    createdAt: row.created_at,
    updatedAt: row.updated_at ?? row.created_at,
    createdBy: row.created_by,
    updatedBy: row.updated_by,
  };
}

export class PgStorage {
  constructor(connectionString) {
    // pg's default size: with 4, every request in pg-primary queued behind the few in flight.
    this.pool = new pg.Pool({ connectionString, max: 10, options: "-c search_path=workspace,public" });
    // An idle connection PostgreSQL dropped: the pool replaces it on the next query.
    this.pool.on("error", (error) => console.error(JSON.stringify({ event: "pg pool error", error: String(error) })));
  }

  async init() {
    await this.pool.query("SELECT 1");
  }

  async getItems() {
    const { rows } = await this.pool.query(`SELECT ${COLUMNS} FROM workspace_items ORDER BY created_at DESC`);
    return rows.map(toApi);
  }

  async getItem(id) {
    const { rows } = await this.pool.query(`SELECT ${COLUMNS} FROM workspace_items WHERE id = $1`, [id]);
    return rows[0] ? toApi(rows[0]) : null;
  }

  async createItem(item) {
    const { id: _assigned, ...record } = newItem(item, new Date()); // the table assigns the id
    const { rows } = await this.pool.query(
      `INSERT INTO workspace_items (title, description, category, priority, status, tags, created_at, updated_at,
                                    created_by, updated_by, metadata)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${COLUMNS}`,
      [record.title, record.description, record.category, record.priority, record.status, record.tags,
       record.createdAt, record.updatedAt, record.createdBy, record.updatedBy, record.metadata],
    );
    return toApi(rows[0]);
  }

  async updateItem(id, updates) {
    const sets = [];
    const values = [];
    for (const [key, value] of Object.entries(updates)) {
      const column = CAMEL[key] ?? key;
      if (!WRITABLE.has(column) || column === "updated_at") continue;
      values.push(value);
      sets.push(`${column} = $${values.length}`);
    }
    values.push(new Date());
    sets.push(`updated_at = $${values.length}`);
    values.push(id);
    const { rows } = await this.pool.query(
      `UPDATE workspace_items SET ${sets.join(", ")} WHERE id = $${values.length} RETURNING ${COLUMNS}`,
      values,
    );
    return rows[0] ? toApi(rows[0]) : null;
  }

  async deleteItem(id) {
    const { rowCount } = await this.pool.query("DELETE FROM workspace_items WHERE id = $1", [id]);
    return rowCount > 0;
  }

  async getCategories() {
    const { rows } = await this.pool.query(
      `SELECT name AS id, name, display_name, description, is_active, sort_order AS display_order, created_at, updated_at
         FROM workspace.workspace_categories WHERE is_active = true ORDER BY sort_order`,
    );
    return rows;
  }

  async close() {
    await this.pool.end();
  }
}
