// The Workspace API's PostgreSQL strategy written with the Prisma 7 client (the proposal's ORM) over
// the same tables as pg-storage.mjs, answering in the same API shape (snake_case columns beside the
// camelCase keys), so the cutover client is shown to work with either.
import { pathToFileURL } from "node:url";
import { PrismaPg } from "@prisma/adapter-pg";

import { newItem } from "./new-item.mjs";

const ITEM = {
  id: true, title: true, description: true, category: true, priority: true, status: true, tags: true,
  createdAt: true, updatedAt: true, createdBy: true, updatedBy: true, metadata: true,
};
const UPDATABLE = new Set(["title", "description", "category", "priority", "status", "tags", "metadata"]);

function toApi(item) {
  return {
    ...item,
    created_at: item.createdAt,
    updated_at: item.updatedAt,
    created_by: item.createdBy,
    updated_by: item.updatedBy,
    updatedAt: item.updatedAt ?? item.createdAt,
  };
}

export class PrismaStorage {
  static async create(clientModule, connectionString) {
    const { PrismaClient } = await import(pathToFileURL(clientModule).href);
    return new PrismaStorage(new PrismaClient({ adapter: new PrismaPg({ connectionString }) }));
  }

  constructor(prisma) {
    this.prisma = prisma;
  }

  async init() {
    await this.prisma.$connect();
  }

  async getItems() {
    return (await this.prisma.workspaceItem.findMany({ select: ITEM, orderBy: { createdAt: "desc" } })).map(toApi);
  }

  async getItem(id) {
    const item = await this.prisma.workspaceItem.findUnique({ where: { id }, select: ITEM });
    return item ? toApi(item) : null;
  }

  async createItem(item) {
    return toApi(await this.prisma.workspaceItem.create({ data: newItem(item, new Date()), select: ITEM }));
  }

  // One round trip: update … RETURNING (Prisma's `update`), an absent id is its P2025.
  async updateItem(id, updates) {
    const data = Object.fromEntries(Object.entries(updates).filter(([key]) => UPDATABLE.has(key)));
    try {
      return toApi(await this.prisma.workspaceItem.update({ where: { id }, data: { ...data, updatedAt: new Date() }, select: ITEM }));
    } catch (error) {
      if (error?.code === "P2025") return null;
      throw error;
    }
  }

  async deleteItem(id) {
    const { count } = await this.prisma.workspaceItem.deleteMany({ where: { id } });
    return count > 0;
  }

  async getCategories() {
    const categories = await this.prisma.workspaceCategory.findMany({
      where: { isActive: true },
      orderBy: { sortOrder: "asc" },
      select: { name: true, displayName: true, description: true, isActive: true, sortOrder: true, createdAt: true, updatedAt: true },
    });
    // The same shape as the PostgreSQL strategy's SELECT (name AS id, sort_order AS display_order).
    return categories.map((c) => ({
      id: c.name, name: c.name, display_name: c.displayName, description: c.description, is_active: c.isActive,
      display_order: c.sortOrder, created_at: c.createdAt, updated_at: c.updatedAt,
    }));
  }

  async close() {
    await this.prisma.$disconnect();
  }
}
