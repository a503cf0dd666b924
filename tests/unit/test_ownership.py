"""The stream assignment every instance computes: even, deterministic, stable under membership change."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from syncd.ownership import assign

names = st.lists(st.text("abcdefgh:-_", min_size=1, max_size=8), unique=True, max_size=20)


@given(streams=names, members=names.filter(bool))
def test_every_stream_has_one_owner_and_counts_differ_by_at_most_one(streams: list[str], members: list[str]) -> None:
    owners = assign(streams, members)
    assert set(owners) == set(streams)
    assert set(owners.values()) <= set(members)
    load = Counter(owners.values())
    counts = [load.get(m, 0) for m in members]
    assert max(counts) - min(counts) <= 1


@given(streams=names, members=names.filter(bool))
def test_order_of_inputs_does_not_matter(streams: list[str], members: list[str]) -> None:
    assert assign(streams, members) == assign(list(reversed(streams)), list(reversed(members)))


def test_one_member_owns_everything() -> None:
    assert assign(["workspace", "questdb:telegram_bots"], ["solo"]) == {
        "workspace": "solo",
        "questdb:telegram_bots": "solo",
    }


def test_no_member_owns_nothing() -> None:
    assert assign(["workspace"], []) == {}


@given(streams=names, members=st.lists(st.sampled_from("abcdef"), min_size=2, unique=True))
def test_a_member_leaving_moves_only_its_own_streams(streams: list[str], members: list[str]) -> None:
    before = assign(streams, members)
    gone, *staying = members
    after = assign(streams, staying, current={s: m for s, m in before.items() if m != gone})
    moved = {s for s in streams if before[s] != after[s]}
    assert moved == {s for s, m in before.items() if m == gone}


@given(streams=names, members=st.lists(st.sampled_from("abcdef"), min_size=1, unique=True))
def test_a_member_joining_takes_only_the_excess(streams: list[str], members: list[str]) -> None:
    before = assign(streams, members)
    after = assign(streams, [*members, "new"], current=before)
    moved = {s for s in streams if before[s] != after[s]}
    assert all(after[s] == "new" for s in moved)
    assert len(moved) == len(streams) // (len(members) + 1)


def test_without_current_holders_the_assignment_is_still_complete() -> None:
    streams = [f"s{i}" for i in range(7)]
    assert Counter(assign(streams, ["a", "b", "c"]).values()) == {"a": 3, "b": 2, "c": 2}
