// The category routes of the Workspace API (upstream-workspace-api.md §1, §3). Their writes talk to
// the PostgreSQL pool directly, as upstream's do, so they answer 500 on the LowDB strategy.
const CATEGORY = "SELECT name AS id, name, display_name, description, is_active, sort_order AS display_order, created_at, updated_at FROM workspace.workspace_categories";

export function categoryRoutes(app, storage, route) {
  const pool = () => {
    if (!storage.pool) throw new Error("category writes need the PostgreSQL strategy");
    return storage.pool;
  };
  app.get("/api/categories/:name", route(async (req, res) => {
    const found = storage.pool
      ? (await storage.pool.query(`${CATEGORY} WHERE name = $1`, [req.params.name])).rows[0]
      : (await storage.getCategories()).find((c) => c.name === req.params.name);
    if (!found) return res.status(404).json({ success: false, message: "Category not found" });
    res.json({ success: true, data: found });
  }));
  app.post("/api/categories", route(async (req, res) => {
    const { name, display_name, description, sort_order } = req.body;
    if (!/^[a-z0-9-]+$/.test(name ?? "")) return res.status(400).json({ success: false, message: "invalid name" });
    try {
      const { rows } = await pool().query(
        `INSERT INTO workspace.workspace_categories (name, display_name, description, sort_order, is_active, created_at, updated_at)
         VALUES ($1, $2, $3, $4, true, now(), now()) RETURNING name`,
        [name, display_name ?? name, description ?? null, sort_order ?? 99],
      );
      res.status(201).json({ success: true, data: rows[0] });
    } catch (error) {
      if (error.code !== "23505") throw error;
      res.status(409).json({ success: false, message: "Category already exists" });
    }
  }));
  app.put("/api/categories/:name", route(async (req, res) => {
    const { display_name, description, sort_order, is_active } = req.body;
    const { rowCount } = await pool().query(
      `UPDATE workspace.workspace_categories SET display_name = COALESCE($1, display_name),
         description = COALESCE($2, description), sort_order = COALESCE($3, sort_order),
         is_active = COALESCE($4, is_active), updated_at = now() WHERE name = $5`,
      [display_name ?? null, description ?? null, sort_order ?? null, is_active ?? null, req.params.name],
    );
    if (!rowCount) return res.status(404).json({ success: false, message: "Category not found" });
    res.json({ success: true, message: "Category updated" });
  }));
  app.delete("/api/categories/:name", route(async (req, res) => {
    const { rows } = await pool().query("SELECT count(*)::int AS n FROM workspace.workspace_items WHERE category = $1", [req.params.name]);
    if (rows[0].n > 0) return res.status(409).json({ success: false, message: "Category is used by items" });
    const { rowCount } = await pool().query("DELETE FROM workspace.workspace_categories WHERE name = $1", [req.params.name]);
    if (!rowCount) return res.status(404).json({ success: false, message: "Category not found" });
    res.json({ success: true, message: "Category deleted" });
  }));
  app.patch("/api/categories/:name/toggle", route(async (req, res) => {
    const { rowCount } = await pool().query(
      "UPDATE workspace.workspace_categories SET is_active = NOT is_active, updated_at = now() WHERE name = $1",
      [req.params.name],
    );
    if (!rowCount) return res.status(404).json({ success: false, message: "Category not found" });
    res.json({ success: true, message: "Category toggled" });
  }));
}
