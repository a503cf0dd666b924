"""Faults the real QuestDB cannot be made to produce on demand, put in front of it.

`TcpProxy` forwards a loopback port to the server (HTTP or PG wire) and can `cut()` it (connections
reset, then refused: QuestDB down), `hang()` it (accepted, never answered: a client timeout) and
`restore()` it. `FaultyHttp` is an HTTP front that forwards `/exec` to the real server and answers
the next N requests with a fault instead: a 500, an HTML error page (a proxy's), JSON of the wrong
shape, a clock read with no row, a value of the wrong type, a refusal of our SQL, or no answer at
all (a hang). Everything else comes from the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import aiohttp
from aiohttp import web

from tests.questdb_server import free_port

Fault = Literal["500", "html", "shape", "array", "empty", "cell", "refused", "hang"]


class TcpProxy:
    """127.0.0.1:`port` → 127.0.0.1:`target`, with cut/hang/restore."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        """Stop listening and reset every open connection: the server looks down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def hang(self) -> None:
        """From now on, bytes are read but never forwarded either way."""
        self._flowing.clear()

    async def restore(self) -> None:
        """Forward again (after a cut, listen again)."""
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        """Close everything."""
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        tasks = [asyncio.create_task(self._pipe(reader, up_writer)), asyncio.create_task(self._pipe(up_reader, writer))]
        self._pipes.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()
        self._pipes.difference_update(tasks)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            sink.write_eof()


class FaultyHttp:
    """An `/exec` front of the real server that can answer the next requests with a fault."""

    def __init__(self, target: int) -> None:
        self.target = f"http://127.0.0.1:{target}"
        self.port = free_port()
        self.pending: list[Fault] = []
        self.faults_served = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._never = asyncio.Event()

    def fail(self, count: int, fault: Fault) -> None:
        """Answer the next `count` requests with `fault`."""
        self.pending += [fault] * count

    async def start(self) -> None:
        """Listen on `port`."""
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening, close the upstream session."""
        self._never.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # "empty" is only a fault for the clock read: for any other query no rows is a good answer.
        if self.pending and (self.pending[0] != "empty" or request.query.get("query", "").startswith("SELECT now()")):
            self.faults_served += 1
            fault = self.pending.pop(0)
            if fault == "hang":
                await self._never.wait()  # the client's timeout ends it; stop() releases it
            return _fault(fault)
        assert self._session is not None
        async with self._session.get(self.target + request.path, params=request.query) as answer:
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type=answer.content_type)


def _fault(fault: Fault) -> web.Response:
    if fault == "500":
        return web.json_response({"query": "", "error": "internal error", "position": 0}, status=500)
    if fault == "html":
        return web.Response(
            status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
        )
    if fault == "array":
        return web.json_response([])
    if fault == "empty":  # what crashed the clock read: valid, but no row to read now() from
        return web.json_response({"query": "", "columns": [{"name": "now", "type": "TIMESTAMP"}], "dataset": []})
    if fault == "cell":
        return web.json_response({"query": "", "columns": [{"name": "now", "type": "TIMESTAMP"}], "dataset": [[7]]})
    if fault == "refused":
        return web.json_response({"query": "", "error": "Invalid column: ingested_at", "position": 7}, status=400)
    # 200 with a body QuestDB never sends: a dataset without columns, rows of the wrong width.
    return web.json_response({"query": "", "dataset": [[1, 2, 3]], "count": 1})
