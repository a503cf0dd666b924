// The cutover client: routes a service's storage calls to LowDB or PostgreSQL by its file's mode.
//
//   mode            reads                               writes
//   mirror          LowDB                               LowDB (holding the LowDB writers' lock)
//   shadow          LowDB, also read from PG, compared  LowDB
//   switching       LowDB                               held, then PG once syncd flips
//   pg-primary      PG                                  PG (holding the PG writers' lock)
//   switching-back  PG                                  held, then LowDB (file re-read first)
//
// A write goes to a store only while this client holds that store's writers' lock and the mode
// says so; everything else holds it, for at most `holdBoundMs`. That is the client's half of
// syncd's handshake (syncd/cutover/handover.py): on a handover mode it holds new writes, waits for
// those in flight, acknowledges the handover, then lets go of the lock syncd is waiting for.
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";

import { type Mode, type Store, isHandover, writeStore } from "./modes.js";
import { type Report, Session } from "./session.js";
import { type Compare, compareRecord, differences, fingerprint, records } from "./shadow.js";

/** What a service hands over: its storage clients' shared shape (upstream: init … close). */
export interface StorageClient {
  init(): Promise<unknown>;
  close(): Promise<unknown>;
}

/** The names of the methods of S. */
export type MethodOf<S> = { [K in keyof S]: S[K] extends (...args: never[]) => unknown ? K : never }[keyof S] &
  string;

export interface CutoverOptions<S extends StorageClient> {
  /** The `[[lowdb]]` entry name syncd knows the file by. */
  file: string;
  /** The service's LowDB storage client; its `init()` must (re-)read the file. */
  lowdb: S;
  /** The service's PostgreSQL storage client (node-postgres, Prisma, …). */
  postgres: S;
  /** Where the client's own session connects (a role with syncd_service's grants is enough). */
  connection: string | import("pg").ClientConfig;
  /** The service's name in `syncd cutover status`. */
  service?: string;
  /** How long a write is held during a handover before it fails with HoldTimeout. */
  holdBoundMs?: number;
  /** Poll of the mode (and heartbeat): the fallback when a notification is missed. */
  pollMs?: number;
  /** Reads: served by the store of the mode, compared in shadow. */
  reads?: readonly MethodOf<S>[];
  /** Writes: held during a handover, sent to exactly one store. */
  writes?: readonly MethodOf<S>[];
  /** The table each read method reads, for the shadow mismatch counts. */
  tables?: Partial<Record<MethodOf<S>, string>>;
  /** How long PostgreSQL may take to show what LowDB served before a record counts as a mismatch
   * (syncd applies a file version within tens of ms; longer under load). */
  shadowSettleMs?: number;
  /** How a LowDB record and its PostgreSQL row are compared in shadow (records are matched by id). */
  compare?: Compare;
  /** One structured line per event (mode followed, hold timed out, mismatch, session lost). */
  log?: (event: string, fields: Record<string, unknown>) => void;
}

/** A write held longer than the bound: the handover did not finish in time. Nothing was written. */
export class HoldTimeout extends Error {
  constructor(
    readonly file: string,
    readonly method: string,
    readonly boundMs: number,
  ) {
    super(`cutover of ${file}: ${method} held ${boundMs} ms without a store to write (handover still running)`);
    this.name = "HoldTimeout";
  }
}

/** A method the store of the current mode does not have (e.g. a LowDB-only category write in pg-primary). */
export class UnsupportedInMode extends Error {
  constructor(
    readonly method: string,
    readonly store: Store,
  ) {
    super(`${method} is not available on the ${store} storage client`);
    this.name = "UnsupportedInMode";
  }
}

/** What the client sees, for a service's /health. */
export interface CutoverStatus {
  file: string;
  mode: Mode | null;
  reads: Store;
  writes: Store | "held";
  postgres: boolean;
  holds: number;
  holdsTimedOut: number;
  holdMsMax: number;
  shadowReads: number;
  shadowMismatches: Record<string, number>;
  lastError: string | null;
}

const DEFAULT_READS = ["getItems", "getItem", "getCategories", "getCategory"];
const DEFAULT_WRITES = ["createItem", "updateItem", "deleteItem", "createCategory"];
const DEFAULT_TABLES: Record<string, string> = {
  getItems: "workspace.workspace_items",
  getItem: "workspace.workspace_items",
  getCategories: "workspace.workspace_categories",
  getCategory: "workspace.workspace_categories",
};
const SHADOW_PENDING_MAX = 8;

type Waiter = (store: Store) => void;
type Method = (...args: unknown[]) => Promise<unknown>;

export class CutoverClient<S extends StorageClient> {
  readonly id = randomUUID();
  private readonly stores: Record<Store, S>;
  private readonly holdBoundMs: number;
  private readonly pollMs: number;
  private readonly shadowSettleMs: number;
  private readonly compare: Compare;
  private readonly tables: Record<string, string>;
  private readonly log: (event: string, fields: Record<string, unknown>) => void;

  private session: Session | null = null;
  private mode: Mode | null = null;
  private reads: Store = "lowdb";
  private writes: Store | null = null;
  private locked: Store | null = null;
  private reloadLowdb = false;
  private acked = 0;
  private readonly inflight: Record<Store, number> = { lowdb: 0, pg: 0 };
  private drained: (() => void)[] = [];
  private waiters: Waiter[] = [];
  private following: Promise<void> = Promise.resolve();
  private followQueued = false;
  private poll: NodeJS.Timeout | null = null;
  private reconnect: NodeJS.Timeout | null = null;
  private reconnectMs = 100;
  private closed = false;
  private shadowPending = 0;
  private readonly counters = {
    holds: 0,
    holdsTimedOut: 0,
    holdMsMax: 0,
    holdMsTotal: 0,
    shadowReads: 0,
    shadowMismatches: {} as Record<string, number>,
    lastError: null as string | null,
  };

  constructor(private readonly options: CutoverOptions<S>) {
    this.stores = { lowdb: options.lowdb, pg: options.postgres };
    this.holdBoundMs = options.holdBoundMs ?? 5000;
    this.pollMs = options.pollMs ?? 1000;
    this.shadowSettleMs = options.shadowSettleMs ?? 5000;
    this.compare = options.compare ?? compareRecord;
    this.tables = { ...DEFAULT_TABLES, ...(options.tables as Record<string, string> | undefined) };
    this.log = options.log ?? (() => undefined);
  }

  /** Initialise both storage clients, connect, and follow the mode; resolves once routing is known
   * (or PostgreSQL proved unreachable: then reads stay on LowDB and writes are held until it is back). */
  async init(): Promise<void> {
    await Promise.all([this.stores.lowdb.init(), this.stores.pg.init()]);
    await this.connect();
    this.poll = setInterval(() => this.follow(), this.pollMs);
    this.poll.unref();
    await this.following;
  }

  /** Stop following, say goodbye in the registry, close both storage clients. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.poll) clearInterval(this.poll);
    if (this.reconnect) clearTimeout(this.reconnect);
    await this.following;
    this.writes = null;
    await Promise.all([this.drain("lowdb"), this.drain("pg")]);
    await this.session?.close().catch(() => undefined);
    this.session = null;
    await Promise.all([this.stores.lowdb.close(), this.stores.pg.close()]);
  }

  /** What the client sees right now. */
  status(): CutoverStatus {
    return {
      file: this.options.file,
      mode: this.mode,
      reads: this.reads,
      writes: this.writes ?? "held",
      postgres: this.session !== null,
      holds: this.counters.holds,
      holdsTimedOut: this.counters.holdsTimedOut,
      holdMsMax: this.counters.holdMsMax,
      shadowReads: this.counters.shadowReads,
      shadowMismatches: { ...this.counters.shadowMismatches },
      lastError: this.counters.lastError,
    };
  }

  /** The service's storage client S, every call routed by the mode. */
  store(): S {
    const routed: Record<string, unknown> = {
      init: () => this.init(),
      close: () => this.close(),
      cutover: this,
    };
    for (const name of this.options.reads ?? DEFAULT_READS) routed[name] = (...args: unknown[]) => this.read(name, args);
    for (const name of this.options.writes ?? DEFAULT_WRITES) {
      routed[name] = (...args: unknown[]) => this.write(name, args);
    }
    return routed as unknown as S;
  }

  /** Serve a read from the mode's store; in shadow, also compare it with PostgreSQL's answer. */
  async read(name: string, args: unknown[]): Promise<unknown> {
    const store = this.reads;
    const result = await this.method(store, name)(...args);
    if (this.mode === "shadow" && store === "lowdb") this.shadow(name, args, result);
    return result;
  }

  /** Send a write to the store the mode writes, holding it while a handover runs. */
  async write(name: string, args: unknown[]): Promise<unknown> {
    let store = this.writes;
    if (store === null) store = await this.hold(name);
    else this.inflight[store] += 1;
    try {
      return await this.method(store, name)(...args);
    } finally {
      this.inflight[store] -= 1;
      if (this.inflight[store] === 0) this.wake();
    }
  }

  // -- following the mode ---------------------------------------------------------------------

  /** Re-read the mode and apply it; calls coalesce, and run one at a time. */
  private follow(): void {
    if (this.followQueued || this.closed) return;
    this.followQueued = true;
    this.following = this.following.then(async () => {
      this.followQueued = false;
      const session = this.session;
      if (session === null) return;
      try {
        const { mode, handoverId } = await session.mode();
        await this.enter(session, mode, handoverId);
        await session.report(this.report());
      } catch (error) {
        this.failed("follow", error);
      }
    });
  }

  /** Make this client's routing what `mode` says (the client's half of the handshake). */
  private async enter(session: Session, mode: Mode, handoverId: number): Promise<void> {
    const target = writeStore(mode);
    if (this.writes !== null && this.writes !== target) {
      const old = this.writes;
      this.writes = null; // new writes are held from here on
      await this.drain(old);
    }
    if (isHandover(mode) && this.acked < handoverId) {
      this.acked = handoverId;
      await session.report({ ...this.report(), mode, writes: "held" });
    }
    // While this client does not write the file, syncd may (the reverse path): its copy goes stale.
    if (target !== "lowdb") this.reloadLowdb = true;
    if (this.locked !== null && this.locked !== target) {
      await session.unlock(this.locked);
      this.locked = null;
    }
    if (target !== null && this.locked !== target) {
      await session.lock(target);
      this.locked = target;
      const now = await session.mode(); // the mode may have moved on while we waited for the lock
      if (writeStore(now.mode) !== target) return this.enter(session, now.mode, now.handoverId);
    }
    if (target === "lowdb" && this.reloadLowdb) {
      await this.stores.lowdb.init(); // never write a stale in-memory copy of the file
      this.reloadLowdb = false;
      this.log("lowdb reloaded", { file: this.options.file });
    }
    this.followed(mode, target);
  }

  private followed(mode: Mode, target: Store | null): void {
    if (mode === "shadow" && this.mode !== "shadow") {
      this.counters.shadowReads = 0;
      this.counters.shadowMismatches = {};
    }
    if (mode !== this.mode) this.log("mode followed", { file: this.options.file, from: this.mode, to: mode });
    this.mode = mode;
    if (target !== null) {
      this.reads = target;
      this.open(target);
    }
  }

  /** Writes may go to `store` again: release the held ones. */
  private open(store: Store): void {
    this.writes = store;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter(store);
  }

  /** Wait (at most the bound) for a store to write; the write is counted in flight when it resolves. */
  private hold(name: string): Promise<Store> {
    const started = performance.now();
    return new Promise<Store>((resolve, reject) => {
      const waiter: Waiter = (store) => {
        clearTimeout(timer);
        this.inflight[store] += 1;
        const held = performance.now() - started;
        this.counters.holds += 1;
        this.counters.holdMsTotal += held;
        this.counters.holdMsMax = Math.max(this.counters.holdMsMax, held);
        resolve(store);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        this.counters.holdsTimedOut += 1;
        this.log("hold timed out", { file: this.options.file, method: name, boundMs: this.holdBoundMs });
        reject(new HoldTimeout(this.options.file, name, this.holdBoundMs));
      }, this.holdBoundMs);
      this.waiters.push(waiter);
    });
  }

  private async drain(store: Store): Promise<void> {
    while (this.inflight[store] > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  private wake(): void {
    const drained = this.drained;
    this.drained = [];
    for (const resolve of drained) resolve();
  }

  // -- the session ----------------------------------------------------------------------------

  private async connect(): Promise<void> {
    try {
      this.session = await Session.open({
        connection: this.options.connection,
        file: this.options.file,
        clientId: this.id,
        service: this.options.service ?? "node-service",
        holdBoundMs: this.holdBoundMs,
        onNotify: () => this.follow(),
        onLost: (error) => this.lost(error),
      });
      this.reconnectMs = 100;
      this.follow();
    } catch (error) {
      this.failed("connect", error);
      this.retry();
    }
  }

  /** PostgreSQL is gone: our locks went with the session, so stop writing at once; reads stay put. */
  private lost(error: Error): void {
    this.session = null;
    this.writes = null;
    this.reloadLowdb = true; // the file may change while we cannot follow
    this.locked = null;
    this.failed("session lost", error);
    this.retry();
  }

  private retry(): void {
    if (this.closed || this.reconnect) return;
    this.reconnect = setTimeout(() => {
      this.reconnect = null;
      void this.connect();
    }, this.reconnectMs);
    this.reconnect.unref();
    this.reconnectMs = Math.min(this.reconnectMs * 2, 2000);
  }

  private failed(what: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.counters.lastError = `${what}: ${message}`;
    this.log("cutover client error", { file: this.options.file, what, error: message });
  }

  private report(): Report {
    return {
      mode: this.mode ?? "connecting",
      writes: this.writes ?? "held",
      handoverAcked: this.acked,
      ...this.counters,
      shadowMismatches: { ...this.counters.shadowMismatches },
    };
  }

  // -- shadow ---------------------------------------------------------------------------------

  private shadow(name: string, args: unknown[], lowdb: unknown): void {
    if (this.shadowPending >= SHADOW_PENDING_MAX) return; // never queue up PostgreSQL reads without bound
    this.shadowPending += 1;
    this.shadowCompare(name, args, lowdb)
      .catch((error: unknown) => this.failed(`shadow ${name}`, error))
      .finally(() => {
        this.shadowPending -= 1;
      });
  }

  /** A record counts as a mismatch only if PostgreSQL still disagrees with it after `shadowSettleMs`
   * while LowDB's record stayed the same: PostgreSQL follows LowDB a few ms (under load, seconds)
   * behind, and a record written again meanwhile is in flux, not wrong. */
  private async shadowCompare(name: string, args: unknown[], lowdb: unknown): Promise<void> {
    const deadline = performance.now() + this.shadowSettleMs;
    const pending = differences(lowdb, await this.method("pg", name)(...args), this.compare);
    const first = records(lowdb);
    const seen = new Map([...pending.keys()].map((id) => [id, fingerprint(first.get(id))]));
    let delay = 20;
    while (pending.size > 0 && performance.now() < deadline && this.mode === "shadow") {
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 500);
      const again = await this.method("lowdb", name)(...args);
      const now = differences(again, await this.method("pg", name)(...args), this.compare);
      const current = records(again);
      for (const id of [...pending.keys()]) {
        const still = now.get(id);
        if (still === undefined || fingerprint(current.get(id)) !== seen.get(id)) pending.delete(id);
        else pending.set(id, still);
      }
    }
    if (this.mode !== "shadow") return;
    this.counters.shadowReads += 1;
    if (pending.size === 0) return;
    const table = this.tables[name] ?? name;
    this.counters.shadowMismatches[table] = (this.counters.shadowMismatches[table] ?? 0) + pending.size;
    const sample = [...pending].slice(0, 3).map(([id, what]) => `${id}: ${what}`);
    this.counters.lastError = `shadow ${name}: ${sample.join("; ")}`;
    this.log("shadow mismatch", { file: this.options.file, table, method: name, records: pending.size, sample });
  }

  private method(store: Store, name: string): Method {
    const client = this.stores[store] as unknown as Record<string, unknown>;
    const method = client[name];
    if (typeof method !== "function") throw new UnsupportedInMode(name, store);
    return (...args: unknown[]) => Promise.resolve((method as Method).apply(client, args));
  }
}
