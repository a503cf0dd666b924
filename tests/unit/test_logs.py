"""Logs: JSON lines only (the standard library's too), DSN passwords and secret keys never rendered."""

from __future__ import annotations

import logging
import warnings

import orjson
import pytest
import structlog

from syncd.logs import configure, redact, redact_secrets


def test_dsn_password_is_scrubbed() -> None:
    """The password part of any DSN inside a message becomes ***."""
    text = "connect postgresql://syncd:hunter2@db:5432/ts failed"
    assert redact(text) == "connect postgresql://syncd:***@db:5432/ts failed"
    assert redact("postgresql://syncd@db/ts") == "postgresql://syncd@db/ts"


def test_processor_masks_secret_keys_and_values() -> None:
    """Secret-named keys are masked and string values are scrubbed."""
    event = {"event": "x", "token": "123:ABC", "dsn": "postgres://u:pw@h/d"}
    assert redact_secrets(None, "info", event) == {"event": "x", "token": "***", "dsn": "postgres://u:***@h/d"}



def test_standard_library_logging_comes_out_as_json_lines(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncpg's and aiohttp's loggers, a warning and a traceback: each one JSON line, redacted."""
    configure("info")
    logging.getLogger("asyncpg.pool").warning("reconnect to %s failed", "postgresql://syncd:hunter2@db/ts")
    logging.getLogger("aiohttp.server").debug("below the level: dropped")
    try:
        raise ConnectionResetError("peer reset")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the suite turns warnings into errors; a daemon logs them
        warnings.warn("a library warning", ResourceWarning, stacklevel=1)
    structlog.get_logger("syncd.daemon").info("own event", stream="s")
    lines = capsys.readouterr().err.splitlines()
    events = [orjson.loads(line) for line in lines]
    assert [(e.get("logger"), e["level"]) for e in events] == [
        ("asyncpg.pool", "warning"),
        ("aiohttp.server", "error"),
        ("py.warnings", "warning"),
        (None, "info"),
    ]
    assert events[0]["event"] == "reconnect to postgresql://syncd:***@db/ts failed"
    assert "ConnectionResetError: peer reset" in events[1]["exception"]
    assert "a library warning" in events[2]["event"]
    assert events[3]["stream"] == "s"
