"""`/exec` answers validated where they are read: anything but a QuestDB answer is "source down"."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from syncd.config import QuestdbSettings
from syncd.errors import QueryRejected, SourceUnavailable, TableMissing
from syncd.questdb.reader import HttpReader, Result

COLUMNS = [{"name": "ts", "type": "TIMESTAMP"}, {"name": "asset", "type": "SYMBOL"}, {"name": "px", "type": "DOUBLE"},
           {"name": "n", "type": "LONG"}, {"name": "ok", "type": "BOOLEAN"}]
ROW = ["2025-01-01T00:00:00.000000Z", "BTC", 1.5, 7, True]


def decode(status: int, body: bytes | object) -> Result:
    """What the HTTP reader makes of one answer."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return HttpReader(QuestdbSettings())._decode("SELECT x", status, raw)


def test_a_good_answer_reads_typed_rows() -> None:
    result = decode(200, {"query": "q", "columns": COLUMNS, "dataset": [ROW, [None, None, None, None, False]]})
    assert result.columns == ("ts", "asset", "px", "n", "ok")
    assert result.rows[0] == (datetime(2025, 1, 1, tzinfo=UTC), "BTC", 1.5, 7, True)
    assert result.value(datetime) == datetime(2025, 1, 1, tzinfo=UTC)
    assert result.maybe(float, 1, 2) is None


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, b"<html><body>502 Bad Gateway</body></html>", "HTTP 200, body is not JSON: '<html><body>502 Bad"),
        (502, b"<html>bad gateway</html>", "HTTP 502, body is not JSON"),
        (200, b"", "body is not JSON: ''"),
        (500, {"error": "internal"}, "HTTP 500: internal"),
        (503, {"unexpected": 1}, "HTTP 503: '{\"unexpected\":1}'"),
        (404, b'{"nothing": "here"}', "HTTP 404: "),
        (200, [], "not a QuestDB answer: body: Input should be a valid dictionary"),
        (200, {"dataset": [[1]]}, "not a QuestDB answer: columns: Field required"),
        (200, {"columns": COLUMNS}, "dataset: Field required"),
        (200, {"columns": [{"name": "x"}], "dataset": []}, "columns.0.type: Field required"),
        (200, {"columns": COLUMNS, "dataset": {"a": 1}}, "dataset is not a list of rows"),
        (200, {"columns": COLUMNS, "dataset": [ROW, ROW[:4]]}, "a row is not 5 values wide"),
        (200, {"columns": COLUMNS, "dataset": [[*ROW[:2], "1.5", *ROW[3:]]]}, "column px (DOUBLE) holds str"),
        (200, {"columns": COLUMNS, "dataset": [[*ROW[:3], 7.5, True]]}, "column n (LONG) holds float"),
        (200, {"columns": COLUMNS, "dataset": [[*ROW[:3], True, True]]}, "column n (LONG) holds bool"),
        (200, {"columns": COLUMNS, "dataset": [[*ROW[:4], None]]}, "column ok (BOOLEAN) holds NoneType"),
        (200, {"columns": COLUMNS, "dataset": [[12, *ROW[1:]]]}, "column ts (TIMESTAMP) holds int"),
        (200, {"columns": COLUMNS, "dataset": [["yesterday", *ROW[1:]]]}, "column ts: not a timestamp: 'yesterday'"),
    ],
)
def test_anything_else_is_source_down_with_its_reason(status: int, body: object, reason: str) -> None:
    with pytest.raises(SourceUnavailable) as caught:
        decode(status, body)
    assert reason in caught.value.reason


def test_refusals_stay_refusals() -> None:
    """QuestDB's own error bodies: a missing table is transient, another refusal names the query."""
    with pytest.raises(TableMissing):
        decode(400, {"query": "q", "error": "table does not exist [table=tp_capital_signals]", "position": 14})
    with pytest.raises(QueryRejected) as caught:
        decode(400, {"query": "q", "error": "Invalid column: nope", "position": "7"})
    assert caught.value.position == 7


@pytest.mark.parametrize(
    ("rows", "kind", "reason"),
    [([], datetime, "answer has no row 0, column 0 (0 rows)"),
     ([("2025",)], datetime, "answer holds '2025' where a datetime belongs"),
     ([(None,)], int, "answer holds NULL where a int belongs"),
     ([(True,)], int, "answer holds True where a int belongs")],
)
def test_a_value_read_is_checked(rows: list[tuple[object, ...]], kind: type, reason: str) -> None:
    """The clock read and the counts: a missing or mistyped value is source down, never a crash."""
    with pytest.raises(SourceUnavailable) as caught:
        Result(("x",), ("X",), rows).value(kind)
    assert caught.value.reason == reason
