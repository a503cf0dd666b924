// The modes of syncd.cutover and what each means for a service's reads and writes
// (README, "Switching the Node services").

export type Mode = "mirror" | "shadow" | "switching" | "pg-primary" | "switching-back" | "retired";

/** The two stores a service writes: its LowDB file, or PostgreSQL. */
export type Store = "lowdb" | "pg";

const MODES: ReadonlySet<string> = new Set<Mode>([
  "mirror",
  "shadow",
  "switching",
  "pg-primary",
  "switching-back",
  "retired",
]);

/** The mode named `value`, or an error naming what syncd.cutover held instead. */
export function parseMode(value: unknown): Mode {
  if (typeof value === "string" && MODES.has(value)) return value as Mode;
  throw new Error(`syncd.cutover holds an unknown mode ${JSON.stringify(value)}: is the client older than syncd?`);
}

/** Where writes go in `mode`; null while a handover holds them. */
export function writeStore(mode: Mode): Store | null {
  switch (mode) {
    case "mirror":
    case "shadow":
      return "lowdb";
    case "pg-primary":
    case "retired":
      return "pg";
    case "switching":
    case "switching-back":
      return null;
  }
}

/** True inside promote's or rollback's handover. */
export function isHandover(mode: Mode): boolean {
  return writeStore(mode) === null;
}
