// Comparing what LowDB served with what PostgreSQL would have served, in `shadow` mode.
//
// The two storage clients do not answer in the same shape: the PostgreSQL one carries the
// snake_case columns beside the camelCase keys, orders lists by created_at, and fills keys the LowDB
// record never had (updatedAt from created_at, tags [] …). So records are matched by id, and only
// the keys the LowDB record has AND the PostgreSQL one has are compared; timestamps as instants.

/** How one LowDB record differs from PostgreSQL's: readable lines such as `title lowdb=… pg=…`. */
export type Compare = (lowdb: unknown, pg: unknown) => string[];

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const TIMESTAMP_KEY = /(At|_at)$/;

/** The records of an answer by id: a list's records, a single record, or none (null: not found). */
export function records(answer: unknown): Map<string, unknown> {
  const list = Array.isArray(answer) ? answer : answer === null || answer === undefined ? [] : [answer];
  return new Map(list.map((record, i) => [recordId(record) ?? `#${i}`, record]));
}

/** What identifies a LowDB record's content: a change of it means the record is still being written. */
export function fingerprint(record: unknown): string {
  return record === undefined ? "(absent)" : JSON.stringify(normalise("", record));
}

/** Per id, how the LowDB answer and the PostgreSQL answer of one read differ. */
export function differences(lowdb: unknown, pg: unknown, compare: Compare = compareRecord): Map<string, string> {
  const ours = records(lowdb);
  const theirs = records(pg);
  const found = new Map<string, string>();
  for (const [id, record] of ours) {
    const other = theirs.get(id);
    const lines = other === undefined ? ["missing in pg"] : compare(record, other);
    if (lines.length > 0) found.set(id, lines.join(", "));
  }
  for (const id of theirs.keys()) if (!ours.has(id)) found.set(id, "missing in lowdb");
  return found;
}

/** The default comparison: the keys the LowDB record has and the PostgreSQL one has too, timestamps as instants. */
export const compareRecord: Compare = (lowdb, pg) => {
  if (!isObject(lowdb) || !isObject(pg)) {
    return same(normalise("", lowdb), normalise("", pg)) ? [] : [`lowdb=${show(lowdb)} pg=${show(pg)}`];
  }
  const lines: string[] = [];
  for (const [key, value] of Object.entries(lowdb)) {
    if (value === undefined || !(key in pg)) continue;
    if (!same(normalise(key, value), normalise(key, pg[key]))) {
      lines.push(`${key} lowdb=${show(value)} pg=${show(pg[key])}`);
    }
  }
  return lines;
};

function normalise(key: string, value: unknown): Json {
  if (value instanceof Date) return value.getTime();
  if (typeof value === "string" && TIMESTAMP_KEY.test(key)) {
    const instant = Date.parse(value);
    return Number.isNaN(instant) ? value : instant;
  }
  if (Array.isArray(value)) return value.map((v) => normalise("", v));
  if (isObject(value)) {
    return Object.fromEntries(
      Object.keys(value)
        .filter((k) => value[k] !== undefined)
        .sort()
        .map((k) => [k, normalise(k, value[k])]),
    );
  }
  if (value === undefined) return null;
  return value as Json;
}

function same(a: Json, b: Json): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function recordId(record: unknown): string | undefined {
  return isObject(record) && record["id"] !== undefined && record["id"] !== null ? String(record["id"]) : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
