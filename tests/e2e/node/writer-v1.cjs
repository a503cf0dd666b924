// lowdb@1 FileSync writer: node writer-v1.cjs FILE OPS_JSON
// Every write truncates and rewrites the file in place, as FileSync does.
'use strict'
const low = require('lowdb1')
const FileSync = require('lowdb1/adapters/FileSync')
const ops = require('./ops.cjs')

const [file, opsJson] = process.argv.slice(2)
const db = low(new FileSync(file))
db.defaults({ items: [], categories: [] }).write()
for (const op of JSON.parse(opsJson)) {
  ops.apply(db.getState(), op)
  db.write()
}
