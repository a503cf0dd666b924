"""SELECT, INSERT and CREATE TABLE of the emulator."""

from __future__ import annotations

from typing import Any

from tests.fakes.questdb_engine import Answer, Node, Store, _col, _type, apply_ties, interval
from tests.fakes.questdb_sql import SqlError, Table, Tokens, to_micros

_TABLES_COLUMNS = [("id", "INT"), ("table_name", "STRING"), ("designatedTimestamp", "STRING"),
                   ("partitionBy", "STRING"), ("walEnabled", "BOOLEAN"), ("dedup", "BOOLEAN"),
                   ("directoryName", "STRING")]


def _source(store: Store, t: Tokens) -> Table | None:
    if not t.word("FROM"):
        return None
    kind, name, pos = t.take()
    if kind == "op" and name == "(":
        raise SqlError("sub-queries are not supported by this emulator", pos)
    if t.word("("):
        arg = t.take() if t.peek()[1] != ")" else None
        t.expect(")")
        if name.lower() == "tables":
            rows: list[list[Any]] = [[tb.id, tb.name, tb.designated, "DAY", True, False, f"{tb.name}~{tb.id}"]
                                     for tb in store.tables.values()]
            return Table("tables()", 0, list(_TABLES_COLUMNS), None, rows)
        if name.lower() == "long_sequence" and arg is not None:
            return Table("long_sequence", 0, [("x", "LONG")], None, [[i + 1] for i in range(int(arg[1]))])
        raise SqlError(f"unknown function name: {name}", pos)
    return store.table(name.strip("'\""), pos)


def _items(store: Store, t: Tokens) -> list[tuple[Node, str | None]]:
    items: list[tuple[Node, str | None]] = []
    while True:
        if t.word("*"):
            items.append((("star",), None))
        else:
            node = store.expr(t)
            alias = None
            if t.word("AS") or (t.peek()[0] == "id" and t.peek()[1].upper() not in _CLAUSES):
                alias = t.take()[1]
            items.append((node, alias))
        if not t.word(","):
            return items


_CLAUSES = {"FROM", "WHERE", "ORDER", "LIMIT", "LATEST", "SAMPLE", "GROUP"}


def _name(node: Node) -> str:
    return str(node[1]) if node[0] in ("col", "call") else "column"


def select(store: Store, t: Tokens, need_total: bool) -> Answer:
    """SELECT items [FROM src] [WHERE] [LATEST ON c PARTITION BY k] [ORDER BY …] [LIMIT n[,m]]."""
    t.expect("SELECT")
    items = _items(store, t)
    table = _source(store, t)
    where = store.expr(t) if t.word("WHERE") else None
    latest = None
    if t.word("LATEST"):
        t.expect("ON")
        on = t.take()
        t.expect("PARTITION")
        t.expect("BY")
        latest = (on, t.take())
    order: list[tuple[str, int, bool]] = []
    if t.word("ORDER"):
        t.expect("BY")
        while True:
            _, column, pos = t.take()
            desc = t.word("DESC")
            t.word("ASC")
            order.append((column, pos, desc))
            if not t.word(","):
                break
    limit = _limit(t) if t.word("LIMIT") else None
    return _run(store, items, table, where, latest, order, limit, need_total)


def _limit(t: Tokens) -> tuple[int, int | None]:
    first = int(_signed(t))
    if t.word(","):
        return first, int(_signed(t))
    return first, None


def _signed(t: Tokens) -> str:
    negative = t.word("-")
    kind, text, pos = t.take()
    if kind != "num":
        raise SqlError("integer expected", pos)
    return ("-" if negative else "") + text


def _scan(store: Store, table: Table, where: Node | None, stop: int | None) -> list[list[Any]]:
    lo, hi, residual = interval(store, table, where)
    rows: list[list[Any]] = []
    for i in range(lo, hi):
        row = table.row(i)
        if residual is None or store.value(residual, table, row):
            rows.append(row)
            if stop is not None and len(rows) >= stop:
                break
    return rows


def _run(store: Store, items: list[tuple[Node, str | None]], table: Table | None, where: Node | None,
         latest: Any, order: list[tuple[str, int, bool]], limit: tuple[int, int | None] | None,
         need_total: bool) -> Answer:
    natural = not order or (table is not None and len(order) == 1 and order[0][0] == table.designated
                            and not order[0][2])
    aggregate = any(n[0] == "call" and n[1] in ("count", "max", "min", "sum") for n, _ in items)
    if aggregate and table is not None and not latest and all(n[0] == "call" and n[1] == "count" for n, _ in items):
        lo, hi, residual = interval(store, table, where)
        if residual is None:  # counting an interval needs no row reads, as in QuestDB
            return Answer([a or "count" for _, a in items], ["LONG"] * len(items), -1, [[hi - lo] * len(items)])
    stop = None
    if natural and not latest and not aggregate and not need_total and limit and limit[0] > 0:
        stop = limit[1] if limit[1] is not None else limit[0]
    rows = _scan(store, table, where, stop) if table is not None else [[]]
    if latest is not None and table is not None:
        rows = _latest(table, rows, latest)
    for column, pos, desc in reversed(order):
        if table is None:
            raise SqlError(f"Invalid column: {column}", pos)
        i = _col(table, column, pos)
        rows.sort(key=lambda r, i=i: (r[i] is not None, r[i]), reverse=desc)
    if table is not None and table.designated and natural:
        apply_ties(store, rows, table.col(table.designated))
    if aggregate:
        return _aggregate(store, items, table, rows)
    total = len(rows)
    rows = _apply_limit(rows, limit)
    return _project(store, items, table, rows, total)


def _latest(table: Table, rows: list[list[Any]], latest: Any) -> list[list[Any]]:
    on, by = latest
    if on[1] != table.designated:
        raise SqlError("latest by over a non-designated timestamp column", on[2])
    key = _col(table, by[1], by[2])
    last: dict[Any, list[Any]] = {}
    for row in rows:  # rows are in ts order: the last one per key wins
        last.pop(row[key], None)
        last[row[key]] = row
    return list(last.values())


def _apply_limit(rows: list[list[Any]], limit: tuple[int, int | None] | None) -> list[list[Any]]:
    if limit is None:
        return rows
    lo, hi = limit
    if hi is None:
        return rows[:lo] if lo >= 0 else rows[lo:]
    return rows[max(lo, 0):max(hi, 0)]


def _project(store: Store, items: list[tuple[Node, str | None]], table: Table | None,
             rows: list[list[Any]], total: int) -> Answer:
    nodes: list[tuple[Node, str]] = []
    for node, alias in items:
        if node[0] == "star":
            if table is None:
                raise SqlError("'*' requires a table", 0)
            nodes += [(("col", c, 0), c) for c, _ in table.columns]
        else:
            nodes.append((node, alias or _name(node)))
    names = [n for _, n in nodes]
    types = [store.type_of(node, table) for node, _ in nodes]
    if table is not None and all(node[0] == "col" for node, _ in nodes):
        idx = [_col(table, node[1], node[2]) for node, _ in nodes]
        out = [[row[i] for i in idx] for row in rows]
    else:
        out = [[store.value(node, table, row) for node, _ in nodes] for row in rows]
    ts = -1
    if table is not None and table.designated:
        ts = next((i for i, (node, _) in enumerate(nodes)
                   if node[0] == "col" and node[1] == table.designated), -1)
    return Answer(names, types, ts, out, total=total)


def _aggregate(store: Store, items: list[tuple[Node, str | None]], table: Table | None,
               rows: list[list[Any]]) -> Answer:
    values: list[Any] = []
    for node, _ in items:
        if node[0] == "call" and node[1] == "count":
            values.append(len(rows))
        elif node[0] == "call" and node[1] in ("max", "min", "sum"):
            seen = [v for r in rows if (v := store.value(node[2][0], table, r)) is not None]
            fn = {"max": max, "min": min, "sum": sum}[node[1]]
            values.append(fn(seen) if seen else None)
        else:
            values.append(store.value(node, table, rows[0] if rows else None))
    names = [alias or _name(node) for node, alias in items]
    types = [store.type_of(node, table) for node, _ in items]
    return Answer(names, types, -1, [values], total=1)


def _coerce(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type in ("TIMESTAMP", "DATE") and isinstance(value, str):
        return to_micros(value)
    if column_type in ("DOUBLE", "FLOAT") and isinstance(value, int):
        return float(value)
    return value


def insert(store: Store, t: Tokens) -> Answer:
    """INSERT INTO t [(cols)] VALUES (…)[, (…)] | INSERT INTO t [(cols)] SELECT …."""
    t.expect("INSERT")
    t.expect("INTO")
    _, name, pos = t.take()
    table = store.table(name, pos)
    columns = [c for c, _ in table.columns]
    if t.word("("):
        columns = [t.take()[1]]
        while t.word(","):
            columns.append(t.take()[1])
        t.expect(")")
    targets = [_col(table, c, pos) for c in columns]
    if t.peek()[1].upper() == "SELECT":
        source = select(store, t, False).rows
    else:
        t.expect("VALUES")
        source = []
        while True:
            t.expect("(")
            values = [store.value(store.expr(t), None, None)]
            while t.word(","):
                values.append(store.value(store.expr(t), None, None))
            t.expect(")")
            source.append(values)
            if not t.word(","):
                break
    for values in source:
        if len(values) != len(targets):
            raise SqlError("value count does not match column count", pos)
        row: list[Any] = [None] * len(table.columns)
        for i, v in zip(targets, values, strict=True):
            row[i] = _coerce(v, table.columns[i][1])
        table.insert(row)
    return Answer(kind="dml")


def create(store: Store, t: Tokens) -> Answer:
    """CREATE TABLE [IF NOT EXISTS] t (c TYPE, …) | CREATE TABLE t AS (SELECT …), then TIMESTAMP(c)."""
    t.expect("CREATE")
    t.expect("TABLE")
    if_not_exists = t.word("IF") and t.word("NOT") and bool(t.expect("EXISTS"))
    _, name, pos = t.take()
    rows: list[list[Any]] = []
    if t.word("AS"):
        t.expect("(")
        answer = select(store, t, False)
        t.expect(")")
        columns = list(zip(answer.names, answer.types, strict=True))
        rows = answer.rows
    else:
        t.expect("(")
        columns = []
        while True:
            _, column, _ = t.take()
            _, ctype, tpos = t.take()
            columns.append((column, _type(ctype, tpos)))
            if not t.word(","):
                break
        t.expect(")")
    designated = None
    if t.word("TIMESTAMP"):
        t.expect("(")
        designated = t.take()[1]
        t.expect(")")
    if t.word("PARTITION"):
        t.expect("BY")
        t.take()
    if t.word("BYPASS"):
        t.expect("WAL")
    t.word("WAL")
    if name in store.tables:
        if if_not_exists:
            return Answer(kind="ddl")
        raise SqlError(f"table already exists [table={name}]", pos)
    table = Table(name, store.new_id(), columns, designated)
    for row in rows:
        table.insert(list(row))
    store.tables[name] = table
    return Answer(kind="ddl")
