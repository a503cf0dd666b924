// @syncd/cutover-client: what a Node service imports to follow syncd's cutover of its LowDB file.
//
//   const storage = cutoverStore({ file: "workspace", lowdb, postgres, connection: process.env.DATABASE_URL });
//   await storage.init(); // then use it exactly like either storage client
import { type CutoverOptions, CutoverClient, type StorageClient } from "./client.js";

export { CutoverClient, HoldTimeout, UnsupportedInMode } from "./client.js";
export type { CutoverOptions, CutoverStatus, MethodOf, StorageClient } from "./client.js";
export type { Mode, Store } from "./modes.js";
export { compareRecord } from "./shadow.js";
export type { Compare } from "./shadow.js";

/** The service's storage client S, routed by the file's cutover mode; `cutover` is the client itself. */
export type CutoverStore<S extends StorageClient> = S & { readonly cutover: CutoverClient<S> };

/** Wrap a service's two storage clients; call `init()` on the result as the service does on either. */
export function cutoverStore<S extends StorageClient>(options: CutoverOptions<S>): CutoverStore<S> {
  return new CutoverClient(options).store() as CutoverStore<S>;
}
