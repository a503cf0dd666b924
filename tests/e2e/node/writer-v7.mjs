// lowdb@7 JSONFile writer: node writer-v7.mjs FILE OPS_JSON [burst]
// One db.write() per operation (temp file + rename), or all writes concurrently with "burst".
import { Low } from 'lowdb'
import { JSONFile } from 'lowdb/node'
import ops from './ops.cjs'

const [file, opsJson, mode] = process.argv.slice(2)
const db = new Low(new JSONFile(file), { items: [], categories: [] })
await db.read()
const list = JSON.parse(opsJson)
if (mode === 'burst') {
  await Promise.all(list.map((op) => { ops.apply(db.data, op); return db.write() }))
} else {
  for (const op of list) {
    ops.apply(db.data, op)
    await db.write()
  }
}
