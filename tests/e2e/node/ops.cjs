// Applies one API-like operation to a LowDB data object, the way upstream's routes do:
// create = push (a category too), update = {...old, ...body, updatedAt} (PUT merges the raw body), delete = splice.
'use strict'

function apply(data, op) {
  const items = data.items
  if (op.op === 'create') {
    items.push({
      id: op.id, title: op.title, description: op.description ?? 'desc', category: op.category ?? 'dashboard',
      priority: op.priority ?? 'medium', status: 'new', tags: op.tags ?? [],
      createdAt: new Date().toISOString(), updatedAt: null,
    })
  } else if (op.op === 'merge') {
    const i = items.findIndex((r) => r.id === op.id)
    if (i >= 0) items[i] = { ...items[i], ...op.body, updatedAt: new Date().toISOString() }
  } else if (op.op === 'put') {
    // A record exactly as given (shapes older upstream versions or other tools left in files).
    (data[op.collection] ??= []).push(op.record)
  } else if (op.op === 'category') {
    // The LowDB strategy's category shape (id == name, no display_name).
    data.categories.push({
      id: op.name, name: op.name, description: op.description ?? op.name, color: '#10b981',
      display_order: data.categories.length + 1, active: true,
    })
  } else if (op.op === 'delete') {
    const i = items.findIndex((r) => r.id === op.id)
    if (i >= 0) items.splice(i, 1)
  } else {
    throw new Error(`unknown op ${op.op}`)
  }
}

module.exports = { apply }
