"""The operations endpoint (aiohttp): /healthz, /readyz, /metrics, /status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd import metrics
from syncd.errors import SinkUnavailable
from syncd.explain import UnknownDocument, UnknownSyncedTable
from syncd.version import VERSION

# A loop that has not ticked for this long is stuck: /healthz fails so the supervisor restarts us.
HEALTHY_TICK_AGE = 10.0


class Observable(Protocol):
    """What the endpoint reads from the daemon; it never changes it."""

    last_tick: float
    """Monotonic time of the main loop's last tick."""

    def is_leader(self) -> bool:
        """True while this instance holds at least one stream lease."""

    def role_known(self) -> bool:
        """False until PostgreSQL has told whether this instance leads or stands by."""

    def streams_behind(self) -> list[str]:
        """Streams not caught up: snapshot not applied, failed, stalled, or their source down."""

    async def pg_reachable(self) -> bool:
        """True when PostgreSQL answers a trivial query quickly."""

    def status(self) -> Mapping[str, Any]:
        """The /status document."""

    async def explain(self, table: str, key: str) -> Mapping[str, Any]:
        """One row's provenance (`syncd explain --json`); UnknownSyncedTable for a table syncd does not write."""


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


class OpsServer:
    """Serves the four endpoints for one daemon; bound to 127.0.0.1 unless told otherwise."""

    def __init__(self, daemon: Observable, host: str, port: int) -> None:
        self._daemon = daemon
        self._host, self._port = host, port
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/status", self.status)
        # A syncd.documents key is COLLECTION/ID: the key takes the rest of the path, slashes included.
        app.router.add_get("/explain/{table}/{key:.+}", self.explain)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self.port: int | None = None

    async def start(self) -> None:
        """Bind and serve; `port` holds the bound port afterwards (useful with port 0)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving (last in shutdown, so probes see the daemon going away)."""
        await self._runner.cleanup()

    async def healthz(self, _request: web.Request) -> web.Response:
        """Alive: the main loop ticked recently."""
        age = time.monotonic() - self._daemon.last_tick
        ok = age < HEALTHY_TICK_AGE
        return _json({"alive": ok, "tick_age_seconds": round(age, 3)}, 200 if ok else 503)

    async def readyz(self, _request: web.Request) -> web.Response:
        """Ready: PG reachable, role known and, as leader, every stream caught up; a healthy standby is ready."""
        pg = await self._daemon.pg_reachable()
        leader = self._daemon.is_leader()
        known = self._daemon.role_known()
        behind = self._daemon.streams_behind() if leader else []
        ready = pg and known and not behind
        role = "leader" if leader else "standby" if known else "unknown"
        body = {
            "ready": ready,
            "postgres": pg,
            "role": role,
            "leader": leader,
            "caught_up": not behind,
            "streams_behind": behind,
        }
        return _json(body, 200 if ready else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus exposition of syncd's registry."""
        _refresh_derived(self._daemon.status())
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, _request: web.Request) -> web.Response:
        """Per-stream JSON: mode, checkpoint, lag, rows applied, quarantine, last error; syncd's version."""
        return _json({"version": VERSION, **self._daemon.status()})

    async def explain(self, request: web.Request) -> web.Response:
        """Where one row came from: 200 with the provenance, 404 for an unknown table, 503 without PostgreSQL."""
        try:
            found = await self._daemon.explain(request.match_info["table"], request.match_info["key"])
        except (UnknownSyncedTable, UnknownDocument) as exc:
            return _json({"error": str(exc)}, 404)
        except (OSError, SinkUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return _json({"error": f"PostgreSQL: {exc}"}, 503)
        return _json(found)


def _refresh_derived(status: Mapping[str, Any]) -> None:
    for name, stream in status.get("streams", {}).items():
        since = stream.get("seconds_since_last_success")
        if since is not None:
            metrics.SECONDS_SINCE_LAST_SUCCESS.labels(name).set(since)
        lag = stream.get("event_lag_seconds")
        if lag is not None:
            metrics.EVENT_LAG.labels(name).set(lag)
        catch_up = stream.get("catch_up") or {}
        if catch_up.get("percent") is not None:
            # A first load in one transaction commits nothing until it ends: read its counters now.
            metrics.export_catch_up(name, catch_up)
