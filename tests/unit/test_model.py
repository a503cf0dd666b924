"""A catch-up's progress: the share of work a one-transaction load has done, and the COPY feed that
counts its rows as they are taken."""

from __future__ import annotations

from syncd.model import STAGE_STEP, LoadProgress, Progress


def test_fraction_of_a_backlog_read_batch_by_batch() -> None:
    """QuestDB: records read of the total; unknown without a total; never past 1."""
    assert Progress(10).fraction() is None
    assert Progress(25, 100).fraction() == 0.25
    assert Progress(120, 100).fraction() == 1.0


def test_fraction_of_a_load_in_one_transaction_counts_both_passes() -> None:
    """LowDB: reading every record is half the work until the diff knows how many rows to stage."""
    assert Progress(50, 100, staged=0).fraction() == 0.25
    assert Progress(100, 100, staged=0).fraction() == 0.5
    assert Progress(100, 100, staged=0, to_stage=100).fraction() == 0.5
    # A restart that finds 10 changed records: staging them is the little work left.
    assert Progress(100, 100, staged=0, to_stage=10).fraction() == 100 / 110
    assert Progress(100, 100, staged=10, to_stage=10).fraction() == 1.0


def test_feed_counts_the_rows_a_copy_takes_a_step_at_a_time() -> None:
    rows = [(i,) for i in range(2 * STAGE_STEP + 3)]
    load = LoadProgress(len(rows))
    fed = load.feed(rows)
    assert load.staged == 0
    first = [next(fed) for _ in range(STAGE_STEP)]
    assert load.staged == STAGE_STEP
    assert next(fed) == (STAGE_STEP,)
    assert load.staged == 2 * STAGE_STEP
    assert [*first, (STAGE_STEP,), *fed] == rows
    assert load.staged == len(rows)
    assert load.snapshot() == Progress(0, len(rows), len(rows), None)
