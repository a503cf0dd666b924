"""Per-file cutover modes in `syncd.cutover`, and their transitions logged in `syncd.cutover_log`.

`mirror` (LowDB is the truth, PG follows) → `pg-primary` (PG is the truth, the file follows) →
`retired` (the file is no longer maintained). `pg-primary` → `mirror` is the rollback. `shadow` is
`mirror` with the cutover clients also reading PostgreSQL and comparing. `switching` and
`switching-back` are the handovers inside `promote` and `rollback`: the clients hold their writes
until the mode flips (syncd/cutover/handover.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, cast

from syncd.database import Connection
from syncd.errors import CutoverRefused

Mode = Literal["mirror", "shadow", "switching", "pg-primary", "switching-back", "retired"]
MIRROR: Final = "mirror"
SHADOW: Final = "shadow"
SWITCHING: Final = "switching"
PG_PRIMARY: Final = "pg-primary"
SWITCHING_BACK: Final = "switching-back"
RETIRED: Final = "retired"

FORWARD_MODES: Final[frozenset[Mode]] = frozenset({MIRROR, SHADOW, SWITCHING})
"""The file is the truth: the forward stream applies it to PostgreSQL."""
REVERSE_MODES: Final[frozenset[Mode]] = frozenset({PG_PRIMARY, SWITCHING_BACK})
"""PostgreSQL is the truth: the reverse path writes it back into the file."""
HANDOVER_MODES: Final[frozenset[Mode]] = frozenset({SWITCHING, SWITCHING_BACK})

TRANSITIONS: Final[Mapping[tuple[Mode, Mode], str]] = {
    (MIRROR, SHADOW): "shadow",
    (SHADOW, MIRROR): "rollback",
    (MIRROR, SWITCHING): "promote",
    (SHADOW, SWITCHING): "promote",
    (SWITCHING, PG_PRIMARY): "promote",
    (SWITCHING, MIRROR): "abort",
    (SWITCHING, SHADOW): "abort",
    (PG_PRIMARY, SWITCHING_BACK): "rollback",
    (SWITCHING_BACK, MIRROR): "rollback",
    (SWITCHING_BACK, PG_PRIMARY): "abort",
    (PG_PRIMARY, RETIRED): "retire",
}


@dataclass(frozen=True, slots=True)
class CutoverState:
    """One file's current mode and who set it when."""

    name: str
    mode: Mode
    changed_at: datetime
    changed_by: str
    handover_id: int = 0
    handover_from: Mode | None = None
    """The mode a handover in progress returns to if it is aborted."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One logged mode change."""

    name: str
    from_mode: Mode | None
    to_mode: Mode
    actor: str
    reason: str | None
    at: datetime


def reverse_consumer(name: str) -> str:
    """The outbox consumer name of a file's reverse path."""
    return f"reverse:{name}"


async def modes(conn: Connection, names: Iterable[str]) -> dict[str, Mode]:
    """Current mode of each named file (`mirror` for files never transitioned)."""
    wanted = list(names)
    rows = await conn.fetch("SELECT name, mode FROM syncd.cutover WHERE name = ANY($1)", wanted)
    found = {r["name"]: cast(Mode, r["mode"]) for r in rows}
    return {n: found.get(n, MIRROR) for n in wanted}


async def lock(conn: Connection, name: str) -> CutoverState:
    """The file's state, row-locked until the transaction ends (created in `mirror` if new).

    The lock serialises transitions with each other and with in-flight LowDB batches, which
    hold the row FOR SHARE (syncd.require_mirror).
    """
    await conn.execute("INSERT INTO syncd.cutover (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name)
    row = await conn.fetchrow(
        """SELECT name, mode, changed_at, changed_by, handover_id, handover_from
             FROM syncd.cutover WHERE name = $1 FOR UPDATE""",
        name,
    )
    assert row is not None
    return CutoverState(
        row["name"],
        cast(Mode, row["mode"]),
        row["changed_at"],
        row["changed_by"],
        row["handover_id"],
        cast("Mode | None", row["handover_from"]),
    )


async def transition(conn: Connection, state: CutoverState, to: Mode, actor: str, reason: str) -> CutoverState:
    """Move a locked file to `to` and log who did it and why; refuses a transition not in the graph.

    Entering a handover mode starts a new handover (its id, and the mode an abort returns to).
    """
    if (state.mode, to) not in TRANSITIONS:
        allowed = sorted({TRANSITIONS[t] for t in TRANSITIONS if t[0] == state.mode} - {"abort"})
        raise CutoverRefused(state.name, [f"it is in {state.mode}; from there only {allowed or 'nothing'} is possible"])
    starts = to in HANDOVER_MODES
    handover_id = state.handover_id + 1 if starts else state.handover_id
    handover_from = state.mode if starts else None
    await conn.execute(
        """UPDATE syncd.cutover SET mode = $2, changed_at = now(), changed_by = $3, handover_id = $4,
                  handover_from = $5 WHERE name = $1""",
        state.name,
        to,
        actor,
        handover_id,
        handover_from,
    )
    await conn.execute(
        "INSERT INTO syncd.cutover_log (name, from_mode, to_mode, actor, reason) VALUES ($1, $2, $3, $4, $5)",
        state.name,
        state.mode,
        to,
        actor,
        reason,
    )
    return CutoverState(state.name, to, state.changed_at, actor, handover_id, handover_from)


async def history(conn: Connection, name: str, limit: int = 20) -> list[Transition]:
    """The file's most recent transitions, newest first."""
    rows = await conn.fetch(
        """SELECT name, from_mode, to_mode, actor, reason, at FROM syncd.cutover_log
            WHERE name = $1 ORDER BY id DESC LIMIT $2""",
        name,
        limit,
    )
    return [
        Transition(
            r["name"], cast("Mode | None", r["from_mode"]), cast(Mode, r["to_mode"]), r["actor"], r["reason"], r["at"]
        )
        for r in rows
    ]
