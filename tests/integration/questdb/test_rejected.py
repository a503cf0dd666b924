"""A QuestDB page PostgreSQL refuses is never skipped: the source rewinds to its committed cursor.

Real QuestDB, real PostgreSQL; the refusal is a trigger (a rule only PostgreSQL knows), dropped
once the pages have been refused a few times. Every row then arrives, none skipped, none twice.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from syncd import metrics
from syncd.config import QuestdbSettings
from syncd.questdb.source import SignalsSource
from syncd.sink.postgres import PostgresSink
from tests.integration.conftest import eventually, running
from tests.integration.questdb.test_source import NOW, SIGNALS, in_sync, sample
from tests.questdb_upstream import Signal, Upstream


async def _true(value: bool) -> bool:
    return value


async def test_a_refused_page_is_read_again_after_the_cause_goes(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("syncd.stream.REJECTED_RETRY_SECONDS", 0.1)
    await pool.execute(
        f"""CREATE FUNCTION public.refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.asset = 'BAD' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER refuse_bad BEFORE INSERT OR UPDATE ON {SIGNALS}
               FOR EACH ROW EXECUTE FUNCTION public.refuse_bad()"""
    )
    source = SignalsSource(settings)
    stream = source.stream
    rejected = sample(metrics.BATCHES, stream=stream, outcome="rejected")
    await questdb.insert(Signal(NOW - timedelta(minutes=9)))
    async with running(source, sink):
        await eventually(lambda: in_sync(questdb, pool), what="first row")
        # A page with the refused row among good ones (page_size 5), and pages after it.
        for i in range(12):
            await questdb.insert(Signal(NOW - timedelta(minutes=8, seconds=-i), asset="BAD" if i == 3 else f"OK{i}"))
        await eventually(lambda: _true(sample(metrics.BATCHES, stream=stream, outcome="rejected") >= rejected + 3),
                         timeout=20, what="the page refused three times")
        await pool.execute(f"DROP TRIGGER refuse_bad ON {SIGNALS}")
        await eventually(lambda: in_sync(questdb, pool), timeout=20, what="every row, the refused page included")
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}") == 13
