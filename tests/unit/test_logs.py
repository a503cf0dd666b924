"""Log redaction: DSN passwords and secret keys never reach the rendered line."""

from __future__ import annotations

from syncd.logs import redact, redact_secrets


def test_dsn_password_is_scrubbed() -> None:
    """The password part of any DSN inside a message becomes ***."""
    text = "connect postgresql://syncd:hunter2@db:5432/ts failed"
    assert redact(text) == "connect postgresql://syncd:***@db:5432/ts failed"
    assert redact("postgresql://syncd@db/ts") == "postgresql://syncd@db/ts"


def test_processor_masks_secret_keys_and_values() -> None:
    """Secret-named keys are masked and string values are scrubbed."""
    event = {"event": "x", "token": "123:ABC", "dsn": "postgres://u:pw@h/d"}
    assert redact_secrets(None, "info", event) == {"event": "x", "token": "***", "dsn": "postgres://u:***@h/d"}
