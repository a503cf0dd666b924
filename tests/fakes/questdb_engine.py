"""The emulator's statement parser and executor over a `Store` of `Table`s."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.questdb_sql import (
    GeneratedSignals,
    SqlError,
    Table,
    Tokens,
    bisect,
    parse_literal,
    shuffle_ties,
    to_micros,
)

_AGGREGATES = {"count", "max", "min", "sum"}
_TYPES = {"TIMESTAMP", "SYMBOL", "STRING", "VARCHAR", "DOUBLE", "FLOAT", "LONG", "INT", "SHORT",
          "BYTE", "BOOLEAN", "CHAR", "DATE", "UUID"}
Node = tuple[Any, ...]


@dataclass
class Answer:
    """A SELECT's answer (names, types, designated index, rows) or a DDL/DML acknowledgement."""

    names: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    timestamp: int = -1
    rows: list[list[Any]] = field(default_factory=list)
    kind: str = "select"
    total: int = 0


class Store:
    """Tables by name; ids from one counter so drop + recreate gives a new id."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self._next_id = 1
        self.clock_offset_us = 0
        self.shuffle_ties = False
        self.rng = random.Random(7)

    def now(self) -> int:
        """Server clock in µs (offset to simulate skew)."""
        return time.time_ns() // 1000 + self.clock_offset_us

    def new_id(self) -> int:
        """The next table id."""
        self._next_id += 1
        return self._next_id

    def table(self, name: str, position: int) -> Table:
        """Table `name` or QuestDB's missing-table error at the name's offset."""
        if name not in self.tables:
            raise SqlError(f"table does not exist [table={name}]", position)
        return self.tables[name]

    def add_generated(self, name: str, start_us: int, rate: float, total: int, tick_us: int) -> GeneratedSignals:
        """Register a computed tp_capital_signals-shaped table."""
        from tests.fakes.questdb import SIGNAL_DDL_COLUMNS

        table = GeneratedSignals(name, self.new_id(), list(SIGNAL_DDL_COLUMNS), start_us, rate, total,
                                 tick_us, self.now)
        self.tables[name] = table
        return table

    def execute(self, sql: str, *, need_total: bool = False) -> Answer:
        """Run one statement."""
        tokens = Tokens(sql)
        for kind, text, pos in tokens.items:
            if kind == "id" and text.upper() in ("OFFSET", "DELETE", "HAVING"):
                raise SqlError(f"unexpected token [{text}]", pos)
        head = tokens.peek()[1].upper()
        handler = {"SELECT": self._select_stmt, "INSERT": self._insert, "CREATE": self._create,
                   "DROP": self._drop, "RENAME": self._rename, "TRUNCATE": self._truncate,
                   "ALTER": self._alter}.get(head)
        if handler is None:
            raise SqlError("unexpected token [" + tokens.peek()[1] + "]", tokens.peek()[2])
        answer = handler(tokens, need_total)
        if tokens.word(";") and tokens.peek()[0] != "end":
            raise SqlError("only one statement per request", tokens.peek()[2])
        if tokens.peek()[0] != "end":
            raise SqlError(f"unexpected token [{tokens.peek()[1]}]", tokens.peek()[2])
        return answer

    # -- expressions -------------------------------------------------------------------------

    def expr(self, t: Tokens) -> Node:
        """OR-level expression."""
        node = self._and(t)
        while t.word("OR"):
            node = ("or", node, self._and(t))
        return node

    def _and(self, t: Tokens) -> Node:
        node = self._not(t)
        while t.word("AND"):
            node = ("and", node, self._not(t))
        return node

    def _not(self, t: Tokens) -> Node:
        if t.word("NOT"):
            return ("not", self._not(t))
        left = self._primary(t)
        kind, text, _ = t.peek()
        if kind == "op" and text in ("=", "!=", "<>", "<", ">", "<=", ">="):
            t.take()
            return ("cmp", "!=" if text == "<>" else text, left, self._primary(t))
        if t.word("IS"):
            negate = t.word("NOT")
            t.expect("NULL")
            return ("isnull", left, negate)
        return left

    def _primary(self, t: Tokens) -> Node:
        kind, text, pos = t.take()
        if kind == "op" and text == "(":
            node = self.expr(t)
            t.expect(")")
            return node
        if kind == "op" and text == "-":
            _, num, _ = t.take()
            return ("lit", -parse_literal("num", num))
        if kind in ("str", "num"):
            return ("lit", parse_literal(kind, text))
        if kind == "id" and t.peek()[1] == "(":
            t.take()
            args: list[Node] = []
            if t.peek()[1] == "*" and t.peek(1)[1] == ")":  # count(*) ≡ count()
                t.take()
            if not t.word(")"):
                args.append(self.expr(t))
                while t.word(","):
                    args.append(self.expr(t))
                t.expect(")")
            return ("call", text.lower(), args, pos)
        if kind == "id" and text.upper() in ("NULL", "NAN", "TRUE", "FALSE"):
            return ("lit", parse_literal(kind, text))
        if kind == "id":
            return ("col", text, pos)
        raise SqlError(f"unexpected token [{text}]", pos)

    def value(self, node: Node, table: Table | None, row: list[Any] | None) -> Any:
        """Evaluate `node` against one row."""
        op = node[0]
        if op == "lit":
            return node[1]
        if op == "col":
            if table is None or row is None:
                raise SqlError(f"Invalid column: {node[1]}", node[2])
            return row[_col(table, node[1], node[2])]
        if op == "call":
            return self._call(node, table, row)
        if op == "and":
            return bool(self.value(node[1], table, row)) and bool(self.value(node[2], table, row))
        if op == "or":
            return bool(self.value(node[1], table, row)) or bool(self.value(node[2], table, row))
        if op == "not":
            return not self.value(node[1], table, row)
        if op == "isnull":
            v = self.value(node[1], table, row)
            null = v is None or (isinstance(v, float) and math.isnan(v))
            return null != node[2]
        return _compare(node[1], self.value(node[2], table, row), self.value(node[3], table, row))

    def _call(self, node: Node, table: Table | None, row: list[Any] | None) -> Any:
        name, args = node[1], node[2]
        if name in ("now", "systimestamp"):
            return self.now()
        if name == "to_timestamp":
            return to_micros(str(self.value(args[0], table, row)))
        raise SqlError(f"unknown function name: {name}", node[3])

    def type_of(self, node: Node, table: Table | None) -> str:
        """QuestDB type name of an expression's column."""
        if node[0] == "col" and table is not None:
            return table.columns[_col(table, node[1], node[2])][1]
        if node[0] == "call":
            if node[1] == "count":
                return "LONG"
            if node[1] in ("max", "min", "sum") and node[2]:
                return self.type_of(node[2][0], table)
            return "TIMESTAMP"
        if node[0] == "lit":
            v = node[1]
            return ("BOOLEAN" if isinstance(v, bool) else "LONG" if isinstance(v, int)
                    else "DOUBLE" if isinstance(v, float) else "STRING")
        return "BOOLEAN"

    # -- statements are in the mixin below --------------------------------------------------

    def _select_stmt(self, t: Tokens, need_total: bool) -> Answer:
        from tests.fakes.questdb_select import select

        return select(self, t, need_total)

    def _insert(self, t: Tokens, _: bool) -> Answer:
        from tests.fakes.questdb_select import insert

        return insert(self, t)

    def _create(self, t: Tokens, _: bool) -> Answer:
        from tests.fakes.questdb_select import create

        return create(self, t)

    def _drop(self, t: Tokens, _: bool) -> Answer:
        t.expect("DROP")
        t.expect("TABLE")
        if_exists = t.word("IF") and bool(t.expect("EXISTS"))
        _, name, pos = t.take()
        name = name.strip("'\"")
        if name not in self.tables and not if_exists:
            raise SqlError(f"table does not exist [table={name}]", pos)
        self.tables.pop(name, None)
        return Answer(kind="ddl")

    def _rename(self, t: Tokens, _: bool) -> Answer:
        t.expect("RENAME")
        t.expect("TABLE")
        _, old, pos = t.take()
        t.expect("TO")
        _, new, new_pos = t.take()
        old, new = old.strip("'\""), new.strip("'\"")
        table = self.table(old, pos)
        if new in self.tables:
            raise SqlError(f"table already exists [table={new}]", new_pos)
        # A rename keeps the table's id (the directory is the same); only drop+create changes it.
        table.name = new
        self.tables[new] = self.tables.pop(old)
        return Answer(kind="ddl")

    def _truncate(self, t: Tokens, _: bool) -> Answer:
        t.expect("TRUNCATE")
        t.expect("TABLE")
        _, name, pos = t.take()
        self.table(name, pos).rows.clear()
        return Answer(kind="ddl")

    def _alter(self, t: Tokens, _: bool) -> Answer:
        t.expect("ALTER")
        t.expect("TABLE")
        _, name, pos = t.take()
        table = self.table(name, pos)
        t.expect("ADD")
        t.expect("COLUMN")
        if_not_exists = t.word("IF") and t.word("NOT") and bool(t.expect("EXISTS"))
        _, column, cpos = t.take()
        _, ctype, tpos = t.take()
        if any(c == column for c, _ in table.columns):
            if if_not_exists:
                return Answer(kind="ddl")
            raise SqlError(f"column '{column}' already exists", cpos)
        table.columns.append((column, _type(ctype, tpos)))
        for row in table.rows:
            row.append(None)
        return Answer(kind="ddl")


def _type(text: str, pos: int) -> str:
    upper = text.upper()
    if upper not in _TYPES:
        raise SqlError(f"unsupported column type: {text}", pos)
    return upper


def _col(table: Table, name: str, pos: int) -> int:
    for i, (column, _) in enumerate(table.columns):
        if column == name:
            return i
    raise SqlError(f"Invalid column: {name}", pos)


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, int) and isinstance(right, str):
        right = to_micros(right)
    elif isinstance(left, str) and isinstance(right, int) and not isinstance(right, bool):
        left = to_micros(left)
    if left is None or right is None:
        # QuestDB: `= NULL` matches NULLs; ordering comparisons with NULL are false.
        return (left is None) == (right is None) if op == "=" else (
            (left is None) != (right is None) if op == "!=" else False)
    if isinstance(left, float) and math.isnan(left):
        return op == "!="
    return bool({"=": left == right, "!=": left != right, "<": left < right, ">": left > right,
                 "<=": left <= right, ">=": left >= right}[op])


def interval(store: Store, table: Table, where: Node | None) -> tuple[int, int, Node | None]:
    """QuestDB's interval scan: designated-ts bounds in top-level ANDs narrow the row range."""
    lo, hi = 0, table.size()
    if where is None or table.designated is None:
        return lo, hi, where
    residual: list[Node] = []
    for conj in _conjuncts(where):
        bound = _ts_bound(table, conj)
        if bound is None:
            residual.append(conj)
            continue
        op, ts = bound
        if op in (">", ">="):
            lo = max(lo, bisect(table, ts, right=op == ">"))
        if op in ("<", "<="):
            hi = min(hi, bisect(table, ts, right=op == "<="))
        if op == "=":
            lo, hi = max(lo, bisect(table, ts, right=False)), min(hi, bisect(table, ts, right=True))
    node: Node | None = None
    for conj in residual:
        node = conj if node is None else ("and", node, conj)
    return lo, max(lo, hi), node


def _conjuncts(node: Node) -> list[Node]:
    return [*_conjuncts(node[1]), *_conjuncts(node[2])] if node[0] == "and" else [node]


def _ts_bound(table: Table, node: Node) -> tuple[str, int] | None:
    if node[0] != "cmp" or node[2][0] != "col" or node[2][1] != table.designated or node[3][0] != "lit":
        return None
    value = node[3][1]
    if isinstance(value, str):
        return node[1], to_micros(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return node[1], value
    return None


def apply_ties(store: Store, rows: list[list[Any]], ts_pos: int | None) -> None:
    """Honour the emulator's tie-shuffling knob on ts-ordered output."""
    if store.shuffle_ties and ts_pos is not None:
        shuffle_ties(rows, ts_pos, store.rng)
