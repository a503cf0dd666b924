// The client's own PostgreSQL session (node-postgres): it LISTENs for mode changes, holds the
// writers' lock of the store the service may write, and writes the client's registry row. The lock
// lives exactly as long as this session, which is why it is one dedicated connection and never a
// pooled one: syncd's handover is granted the lock only once every client's session let go of it.
import os from "node:os";
import pg from "pg";

import { type Mode, type Store, parseMode } from "./modes.js";

export const CHANNEL = "syncd_cutover";

/** The file's mode and the id of its latest handover, as syncd.cutover holds them. */
export interface ModeRow {
  mode: Mode;
  handoverId: number;
}

/** What the client reports in its registry row (syncd.cutover_clients). */
export interface Report {
  mode: string;
  writes: Store | "held";
  handoverAcked: number;
  holds: number;
  holdsTimedOut: number;
  holdMsMax: number;
  holdMsTotal: number;
  shadowReads: number;
  shadowMismatches: Record<string, number>;
  lastError: string | null;
}

/** How the session identifies itself and what ends it. */
export interface SessionOptions {
  connection: string | pg.ClientConfig;
  file: string;
  clientId: string;
  service: string;
  holdBoundMs: number;
  onNotify: () => void;
  onLost: (error: Error) => void;
}

// The lock on the client's own id is how syncd tells it is connected (syncd.cutover_clients_live).
const REGISTER = `
WITH present AS (SELECT pg_advisory_lock(syncd.client_lock_key($1)))
INSERT INTO syncd.cutover_clients (id, name, service, host, pid, backend_pid, mode, writes, hold_bound_ms)
SELECT $1, $2, $3, $4, $5, pg_backend_pid(), 'connecting', 'held', $6 FROM present
ON CONFLICT (id) DO UPDATE SET backend_pid = EXCLUDED.backend_pid, writes = 'held', seen_at = now(), closed_at = NULL`;

const REPORT = `
UPDATE syncd.cutover_clients
   SET mode = $2, writes = $3, handover_acked = $4, holds = $5, holds_timed_out = $6, hold_ms_max = $7,
       hold_ms_total = $8, shadow_reads = $9, shadow_mismatches = $10, last_error = $11, seen_at = now()
 WHERE id = $1`;

export class Session {
  private closing = false;

  private constructor(
    private readonly client: pg.Client,
    private readonly options: SessionOptions,
  ) {}

  /** Connect, LISTEN and register; the session reports its own loss through `onLost`. */
  static async open(options: SessionOptions): Promise<Session> {
    const config = typeof options.connection === "string" ? { connectionString: options.connection } : options.connection;
    // lock_timeout for the whole session: its only lock waits are the writers' lock (bounded by the hold
    // bound, like a held write) and its own id's (which a lingering earlier session may still hold).
    const client = new pg.Client({
      application_name: `syncd-cutover:${options.service}`,
      keepAlive: true,
      ...config,
      lock_timeout: Math.max(1, Math.round(options.holdBoundMs)),
    });
    const session = new Session(client, options);
    client.on("error", (error: Error) => session.lost(error));
    client.on("end", () => session.lost(new Error("PostgreSQL closed the cutover session")));
    client.on("notification", (message: pg.Notification) => {
      if (message.channel === CHANNEL && message.payload === options.file) options.onNotify();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      await client.query(REGISTER, [
        options.clientId,
        options.file,
        options.service,
        os.hostname(),
        process.pid,
        options.holdBoundMs,
      ]);
    } catch (error) {
      session.closing = true;
      await client.end().catch(() => undefined);
      throw error;
    }
    return session;
  }

  /** The file's mode now (`mirror` for a file syncd never transitioned). */
  async mode(): Promise<ModeRow> {
    const { rows } = await this.client.query<{ mode: string; handover_id: string }>(
      "SELECT mode, handover_id::text FROM syncd.cutover WHERE name = $1",
      [this.options.file],
    );
    const row = rows[0];
    return row ? { mode: parseMode(row.mode), handoverId: Number(row.handover_id) } : { mode: "mirror", handoverId: 0 };
  }

  /** Take `store`'s writers' lock shared, waiting at most the hold bound (the session's lock_timeout:
   * a handover may hold it exclusively); one round trip, as it sits on the path of held writes. */
  async lock(store: Store): Promise<void> {
    await this.client.query("SELECT pg_advisory_lock_shared(syncd.writer_lock_key($1, $2))", [this.options.file, store]);
  }

  /** Let go of `store`'s writers' lock. */
  async unlock(store: Store): Promise<void> {
    await this.client.query("SELECT pg_advisory_unlock_shared(syncd.writer_lock_key($1, $2))", [this.options.file, store]);
  }

  /** Write the registry row. */
  async report(report: Report): Promise<void> {
    await this.client.query(REPORT, [
      this.options.clientId,
      report.mode,
      report.writes,
      report.handoverAcked,
      report.holds,
      report.holdsTimedOut,
      report.holdMsMax,
      report.holdMsTotal,
      report.shadowReads,
      JSON.stringify(report.shadowMismatches),
      report.lastError,
    ]);
  }

  /** Say goodbye in the registry and end the session (its locks go with it). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    try {
      await this.client.query("UPDATE syncd.cutover_clients SET closed_at = now(), writes = 'held' WHERE id = $1", [
        this.options.clientId,
      ]);
    } finally {
      await this.client.end();
    }
  }

  private lost(error: Error): void {
    if (this.closing) return;
    this.closing = true;
    this.client.end().catch(() => undefined);
    this.options.onLost(error);
  }
}
