"""The QuestDB emulator's store and SQL subset: what syncd issues plus upstream's writer statements.

Honest to QuestDB where it matters to a poller: rows stored sorted by the designated timestamp
(out-of-order inserts merge into place, ties keep no promised order), NULL timestamps sort first,
comparisons with NULL are false, `LIMIT n` / `LIMIT lo,hi` as in QuestDB, no OFFSET, no DELETE,
`tables()` ids that change on drop + recreate, `table does not exist [table=x]` at the name token.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(\d+\.\d+|\d+)|([A-Za-z_][A-Za-z0-9_.]*)|(<=|>=|!=|<>|[=<>(),*;-]))")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SqlError(Exception):
    """A QuestDB SqlException: HTTP 400 with `position` (0-based offset)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message, self.position = message, position


def to_micros(text: str, position: int = 0) -> int:
    """QuestDB's implicit string → TIMESTAMP cast (ISO, date only, with or without Z)."""
    try:
        value = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise SqlError(f"Invalid timestamp: {text}", position) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(micros: int) -> str:
    """TIMESTAMP as /exec prints it: always 6 fraction digits and `Z`."""
    seconds, us = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{us:06d}Z"


@dataclass
class Table:
    """Rows sorted by the designated timestamp (index `ts`); ties in insertion order."""

    name: str
    id: int
    columns: list[tuple[str, str]]
    designated: str | None
    rows: list[list[Any]] = field(default_factory=list)

    def col(self, name: str) -> int:
        """Index of column `name` (KeyError if absent)."""
        return [c for c, _ in self.columns].index(name)

    def size(self) -> int:
        """Visible row count."""
        return len(self.rows)

    def ts_at(self, i: int) -> int:
        """Designated timestamp of row i."""
        return int(self.rows[i][self.col(self.designated or "")])

    def row(self, i: int) -> list[Any]:
        """Row i."""
        return self.rows[i]

    def insert(self, row: list[Any]) -> None:
        """Out-of-order rows merge into chronological position (after equal timestamps)."""
        if self.designated is None:
            self.rows.append(row)
            return
        ts = row[self.col(self.designated)]
        if ts is None:
            raise SqlError("designated timestamp column cannot be NULL", 0)
        if not self.rows or self.ts_at(len(self.rows) - 1) <= ts:
            self.rows.append(row)
        else:
            self.rows.insert(bisect(self, ts, right=True), row)


class GeneratedSignals(Table):
    """A tp_capital_signals-shaped table computed per index: `rate` rows per second from `start`.

    Rows only become visible once their ts has passed (a steady live stream), so millions of rows
    cost no memory. `tick_us` is the ts granularity: 1_000_000 gives upstream's second precision.
    """

    def __init__(self, name: str, id: int, columns: list[tuple[str, str]], start_us: int,
                 rate: float, total: int, tick_us: int, clock: Callable[[], int]) -> None:
        super().__init__(name, id, columns, "ts")
        self.start_us, self.rate, self.total, self.tick_us, self.clock = start_us, rate, total, tick_us, clock

    def size(self) -> int:
        """Rows whose ingestion time has come, capped at `total`."""
        return max(0, min(self.total, int((self.clock() - self.start_us) * self.rate / 1e6)))

    def _ingested(self, i: int) -> int:
        return self.start_us + int(i * 1e6 / self.rate)

    def ts_at(self, i: int) -> int:
        """Ingestion time truncated to the tick."""
        ingested = self._ingested(i)
        return ingested - (ingested - self.start_us) % self.tick_us

    def row(self, i: int) -> list[Any]:
        """Deterministic values per index."""
        price = 1.0 + (i * 7919 % 900) / 100
        asset = ("BEEFW655", "ABEVK122", "VALEW591", "PETRJ300", "BOVA11")[i % 5]
        return [self.ts_at(i), "@TPCapital_Oficial", "Swing Trade", asset, price, price + 0.1,
                price + 0.5, price + 1.0, price + 2.0, price - 0.5,
                f"COMPRA {asset} {price:.2f} ALVOS {price + 0.5:.2f}", "forwarder",
                self._ingested(i) + i % 3]

    def insert(self, row: list[Any]) -> None:
        """Generated tables are read-only."""
        raise SqlError("generated table is read-only", 0)


def bisect(table: Table, ts: int, *, right: bool) -> int:
    """First index whose ts is > ts (right) or >= ts (left)."""
    lo, hi = 0, table.size()
    while lo < hi:
        mid = (lo + hi) // 2
        value = table.ts_at(mid)
        if value < ts or (right and value == ts):
            lo = mid + 1
        else:
            hi = mid
    return lo


class Tokens:
    """A cursor over the tokens of one statement, keeping each token's offset for errors."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.items: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(sql.rstrip()):
            match = _TOKEN.match(sql, pos)
            if match is None:
                raise SqlError("unexpected character", pos)
            kind = ("str", "num", "id", "op")[next(i for i in range(4) if match.group(i + 1) is not None)]
            start = match.start(match.lastindex or 1)
            self.items.append((kind, match.group(match.lastindex or 1), start))
            pos = match.end()
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        """The token `offset` ahead, or an end marker."""
        j = self.i + offset
        return self.items[j] if j < len(self.items) else ("end", "", len(self.sql))

    def word(self, *words: str) -> bool:
        """Consume the next token if it is one of `words` (case-insensitive)."""
        kind, text, _ = self.peek()
        if kind in ("id", "op") and text.upper() in words:
            self.i += 1
            return True
        return False

    def expect(self, *words: str) -> str:
        """Consume one of `words` or fail with QuestDB's style of message."""
        kind, text, pos = self.peek()
        if not self.word(*words):
            raise SqlError(f"'{words[0].lower()}' expected" if kind != "end" else "unexpected end", pos)
        return text

    def take(self) -> tuple[str, str, int]:
        """Consume and return the next token."""
        token = self.peek()
        if token[0] == "end":
            raise SqlError("unexpected end of input", token[2])
        self.i += 1
        return token


def parse_literal(kind: str, text: str) -> Any:
    """A SQL literal as a Python value (strings unquoted)."""
    if kind == "str":
        return text[1:-1].replace("''", "'")
    if kind == "num":
        return float(text) if "." in text else int(text)
    upper = text.upper()
    if upper == "NULL":
        return None
    if upper == "NAN":
        return math.nan
    if upper in ("TRUE", "FALSE"):
        return upper == "TRUE"
    raise SqlError(f"Invalid column: {text}", 0)


def shuffle_ties(rows: list[list[Any]], ts_pos: int, rng: random.Random) -> None:
    """Reorder rows within runs of equal ts: QuestDB promises no order for ties."""
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][ts_pos] != rows[start][ts_pos]:
            if i - start > 1:
                run = rows[start:i]
                rng.shuffle(run)
                rows[start:i] = run
            start = i
