"""What every `syncd` command shares: the error boundary, the --config option, config loading, coroutines.

The boundary (`CommandGroup`, `Boundary`) is the one place a failure becomes output: one line on
stderr naming the command and what failed, and the exit code DESIGN.md defines (0 done, 1 the
command ran and found a problem, 2 it could not run). `syncd --debug …` adds the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import getpass
import os
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import click
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from syncd import logs
from syncd.config import Config, LowdbSettings
from syncd.database import connect, init_connection
from syncd.errors import BackupError, CutoverRefused, MigrationError, ProblemFound, SyncdError
from syncd.tables import specs_for_layout

T = TypeVar("T")
# Exit codes of every command: done, ran and found a problem, could not run.
EXIT_CLEAN, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130
# Keys of the click context's meta (shared by every nested context) the boundary reads.
_COMMAND, _DSN, _DEBUG = "syncd.command", "syncd.dsn", "syncd.debug"


class CommandGroup(click.Group):
    """A click group that records which subcommand runs, so an error line can name it."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as click does, and remember `syncd <group> <command>` for the boundary."""
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            ctx.meta[_COMMAND] = f"{ctx.command_path} {command.name}"
        return name, command, rest


class Boundary(CommandGroup):
    """The root `syncd` group: every failure of every command ends here as one line and an exit code."""

    _meta: MutableMapping[str, Any]

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """Make the root context and keep its meta (shared by every subcommand's context)."""
        ctx = super().make_context(info_name, args, parent, **extra)
        self._meta = ctx.meta
        return ctx

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        """Run the command line; never returns (exits 0, 1, 2 or 130), never prints a traceback unasked.

        Always standalone: click's own error output (usage banner, `Error:` paragraph) is replaced by the
        one line, also under click's test runner.
        """
        argv = list(sys.argv[1:] if args is None else args)
        self._meta = {}
        try:
            code = super().main(argv, prog_name or "syncd", complete_var, standalone_mode=False, **extra)
        except SystemExit:
            raise
        except BaseException as exc:  # the boundary: every failure of every command ends here
            meta = self._meta
            if meta.get(_DEBUG) or "--debug" in argv:
                traceback.print_exception(exc, file=sys.stderr)
            message, code = describe(exc, meta.get(_DSN))
            if message is None:
                # stdout is a closed pipe: point it at /dev/null so the interpreter's last flush is quiet
                # (the recipe of the signal module's documentation, "Note on SIGPIPE").
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            else:
                where = meta.get(_COMMAND) or (prog_name or "syncd")
                click.echo(f"{where}: {logs.redact(message)}", err=True)
        sys.exit(code if isinstance(code, int) else EXIT_CLEAN)


def describe(exc: BaseException, dsn: str | None) -> tuple[str | None, int]:
    """The one line (None: nothing to add) and the exit code for a failure that reached the boundary."""
    if isinstance(exc, click.UsageError):
        return f"{exc.format_message()} (see --help)", EXIT_ERROR
    if isinstance(exc, click.ClickException):
        return exc.format_message(), exc.exit_code
    if isinstance(exc, click.Abort | KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError | OSError) and getattr(exc, "errno", None) == errno.EPIPE:
        # The reader of a pipe went away (`syncd status | head -1`): nothing to tell it.
        return None, EXIT_MISMATCH
    if isinstance(exc, SyncdError):
        return str(exc), _syncd_error_code(exc)
    target = f"PostgreSQL at {dsn}" if dsn else "PostgreSQL"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        return f"{target}: authentication failed: {exc}", EXIT_ERROR
    if isinstance(exc, asyncpg.PostgresError):
        return f"{target}: [{exc.sqlstate}] {exc}", EXIT_ERROR
    if isinstance(exc, asyncpg.InterfaceError):
        return f"{target}: {exc}", EXIT_ERROR
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", EXIT_ERROR
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return f"cannot listen: {exc}", EXIT_ERROR  # the ops endpoint's http.listen
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return f"cannot connect to {target}: {str(exc) or type(exc).__name__}", EXIT_ERROR
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}", EXIT_ERROR
    return f"unexpected {type(exc).__name__}: {exc} (syncd --debug … shows the traceback)", EXIT_ERROR


def _syncd_error_code(exc: SyncdError) -> int:
    # A refusal or a finding is "ran and found a problem"; everything else kept the command from running.
    if isinstance(exc, CutoverRefused | MigrationError | ProblemFound):
        return EXIT_MISMATCH
    if isinstance(exc, BackupError) and exc.step == "manifest":
        return EXIT_MISMATCH
    return EXIT_ERROR


def debug_requested(enabled: bool) -> None:
    """Record `syncd --debug` for the boundary."""
    click.get_current_context().meta[_DEBUG] = enabled


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="SYNCD_CONFIG",
    show_envvar=True,
    help="TOML config file; every key can also come from the environment.",
)


def load_config(config_path: Path | None) -> Config:
    """Load and validate the config (a bad key is a ConfigError: one line, exit 2)."""
    config = Config.load(config_path, os.environ)
    with contextlib.suppress(RuntimeError):  # outside a command (tests, the bench) there is no context
        click.get_current_context().meta[_DSN] = logs.redact(config.postgres.dsn.get_secret_value())
    return config


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion (its errors reach the boundary)."""
    return asyncio.run(coro)


def on_connection(config_path: Path | None, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection to the configured PostgreSQL, closed afterwards."""
    dsn = load_config(config_path).postgres.dsn.get_secret_value()

    async def go() -> T:
        conn = await connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return run_async(go())


def resolve_files(config: Config, names: Sequence[str], config_path: Path | None = None) -> list[LowdbSettings]:
    """LowDB entries by name, table name (bare or schema-qualified) or file path — absolute, relative
    to the working directory, or as written in the config (relative to the config file); all entries
    when `names` is empty."""
    if not names:
        return list(config.lowdb)
    base = config_path.parent if config_path is not None else None
    found: list[LowdbSettings] = []
    for name in names:
        match = [e for e in config.lowdb if _names(e, name, base)]
        if not match:
            known = ", ".join(e.name for e in config.lowdb) or "none configured"
            raise click.BadParameter(f"{name!r} is no LowDB entry, file or table of this config (entries: {known})")
        found.extend(m for m in match if m not in found)
    return found


def stream_names(config: Config) -> set[str]:
    """The streams this config runs: one per LowDB entry, `questdb:<table>` per QuestDB table."""
    names = {e.name for e in config.lowdb}
    if config.questdb is not None:
        names |= {f"questdb:{t}" for t in config.questdb.tables}
    return names


def _names(entry: LowdbSettings, name: str, base: Path | None) -> bool:
    tables = {s.table for s in specs_for_layout(entry.layout, entry.collections)}
    bare = {t.rpartition(".")[2] for t in tables}
    paths = [Path(name)] if base is None else [Path(name), base / name]
    return (
        name in (entry.name, str(entry.path))
        or name in tables | bare
        or any(p.resolve() == entry.path.resolve() for p in paths)
    )


async def with_pool(config: Config, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run `work` on a small pool to the configured PostgreSQL, closed afterwards."""
    pool = await asyncpg.create_pool(
        config.postgres.dsn.get_secret_value(), min_size=1, max_size=2, init=init_connection
    )
    assert pool is not None
    try:
        return await work(pool)
    finally:
        await pool.close()


def out() -> Console:
    """The console tables go to: the terminal's width, 80 columns when piped (rich's rule, COLUMNS wins)."""
    return Console()


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a `grid`: `keep` cells (names, ids, keys) are never cut or folded; `right` for numbers."""

    name: str
    keep: bool = False
    right: bool = False


def grid(title: str, columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> Table:
    """A table that reads at 80 columns and piped: light rules, kept columns whole, the others fold.

    A kept column gets its widest cell as minimum width, so rich shrinks (folds) the free-text
    columns instead of ellipsizing a stream name or a key.
    """
    cells = [list(r) for r in rows]
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,  # two spaces between columns, not three: more room for the cells
        min_width=cell_len(title),
    )
    for i, c in enumerate(columns):
        widest = max((cell_len(line) for r in cells for line in r[i].splitlines()), default=0)
        table.add_column(
            c.name,
            no_wrap=c.keep,
            min_width=max(widest, *(cell_len(w) for w in c.name.split())) if c.keep else None,
            overflow="fold",
            justify="right" if c.right else "left",
        )
    for r in cells:
        table.add_row(*r)
    return table


def actor() -> str:
    """Who runs this command, for the cutover log."""
    return f"{getpass.getuser()}@{socket.gethostname()}"
