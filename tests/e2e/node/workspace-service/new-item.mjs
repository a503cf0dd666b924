// A new item as the Workspace API creates it (upstream-workspace-api.md §2): its defaults and its
// key order, shared by the storage clients so the LowDB file, node-postgres and Prisma agree.
import { randomBytes } from "node:crypto";

/** An id of the late LowDB strategy's shape: `item-<epoch ms>-<7 base36-ish chars>`. */
export function newItemId() {
  return `item-${Date.now()}-${randomBytes(5).toString("base64url").slice(0, 7).toLowerCase()}`;
}

/** The record `createItem(item)` stores, stamped `now` (an ISO string for the file, a Date for PostgreSQL). */
export function newItem(item, now) {
  return {
    id: item.id ?? newItemId(),
    title: item.title,
    description: item.description ?? "",
    category: item.category,
    priority: item.priority ?? "medium",
    status: item.status ?? "new",
    tags: item.tags ?? [],
    createdAt: now,
    updatedAt: now,
    createdBy: item.createdBy ?? null,
    updatedBy: null,
    metadata: item.metadata ?? {},
  };
}
