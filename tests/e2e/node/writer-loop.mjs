// lowdb@7 writer that keeps editing until SIGTERM: node writer-loop.mjs FILE INTERVAL_MS
// Every write bumps the `clock` item's title (1, 2, 3, ...) and creates or deletes one of 40 other
// items, so each version differs from the last and a test can tell how far PostgreSQL has got.
import { Low } from 'lowdb'
import { JSONFile } from 'lowdb/node'
import ops from './ops.cjs'

const [file, intervalMs] = process.argv.slice(2)
const db = new Low(new JSONFile(file), { items: [], categories: [] })
await db.read()
let stopping = false
process.on('SIGTERM', () => { stopping = true })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const has = (id) => db.data.items.some((r) => r.id === id)

if (!has('clock')) ops.apply(db.data, { op: 'create', id: 'clock', title: '0' })
let n = Number(db.data.items.find((r) => r.id === 'clock').title)
while (!stopping) {
  n += 1
  ops.apply(db.data, { op: 'merge', id: 'clock', body: { title: String(n) } })
  const id = `k${n % 40}`
  ops.apply(db.data, has(id) ? { op: 'delete', id } : { op: 'create', id, title: `t${n}`, tags: [String(n)] })
  await db.write()
  await sleep(Number(intervalMs))
}
