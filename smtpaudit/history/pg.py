"""The history database on PostgreSQL (``--history postgresql://user@host/db``), for teams that
already run one. Same schema version and queries as SQLite: SQL is written in SQLite's dialect and
translated here (placeholders, INSERT OR IGNORE); writers serialise on a transaction-scoped
advisory lock the way SQLite's BEGIN IMMEDIATE does; read commands use read-only transactions.
Everything lives in the ``smtpaudit_history`` schema; a schema of that name that is not ours, or
of a newer version, is refused before anything is written. Needs the ``psycopg`` driver (3.x).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from smtpaudit.history.migrations import APPLICATION_ID, LATEST, PG_APPLICATION, PG_MIGRATIONS, PG_SCHEMA
from smtpaudit.history.store import HistoryError, HistoryStore, _statements

_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL as shown in messages: never the password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://[unparsable URL]"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def translate_sql(sql: str) -> str:
    if _IGNORE.match(sql):
        sql = _IGNORE.sub("INSERT INTO", sql) + " ON CONFLICT DO NOTHING"
    return sql.replace("?", "%s")  # our SQL has no literal question marks or percent signs


class PgConnection:
    """The slice of the sqlite3 connection API the store uses, over a psycopg connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(translate_sql(sql), tuple(params) if params else None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cur = self._conn.cursor()
        rows = list(rows)
        if rows:
            cur.executemany(translate_sql(sql), rows)
        return cur

    def close(self) -> None:
        self._conn.close()


class PgBackend:
    name = "postgresql"

    def __init__(self, psycopg: Any) -> None:
        self.psycopg = psycopg

    def begin_write(self, conn: PgConnection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (APPLICATION_ID,))  # one writer at a time, like SQLite

    def compact(self, conn: PgConnection) -> None:
        pass  # autovacuum reclaims the space

    def translate(self, label: str, exc: BaseException, doing: str, timeout: float) -> HistoryError | None:
        errors = self.psycopg.errors
        if isinstance(exc, (errors.LockNotAvailable, errors.QueryCanceled)):
            return HistoryError(f"{label}: history database is locked by another writer (waited {timeout:g} s) while {doing}; "
                                "try again when it has finished (or raise SMTPAUDIT_HISTORY_BUSY_TIMEOUT)")
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return HistoryError(f"{label}: opened read-only while {doing}")
        if isinstance(exc, self.psycopg.Error):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return HistoryError(f"{label}: PostgreSQL error while {doing}: {first}")
        return None


def open_pg_store(url: str, *, write: bool, timeout: float) -> HistoryStore:
    label = redact(url)
    try:
        import psycopg
    except ImportError:
        raise HistoryError(f"{label}: PostgreSQL history needs the psycopg driver: pip install 'smtpaudit[postgresql]'") from None
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)) if timeout else 10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HistoryError(f"{label}: cannot connect to PostgreSQL: {first}") from None
    conn = PgConnection(raw)
    store = HistoryStore(label, conn, writable=write, timeout=timeout, backend=PgBackend(psycopg))
    try:
        with store.errors("opening"):
            conn.execute(f"SET lock_timeout = '{max(1, int(timeout * 1000))}ms'")  # 0 would mean: wait forever
            if not write:
                conn.execute("SET default_transaction_read_only = on")  # a read command writes nothing
            _validate(store, write)
            conn.execute(f"SET search_path TO {PG_SCHEMA}")
    except BaseException:
        conn.close()
        raise
    return store


def _state(conn: PgConnection) -> tuple[bool, int, str | None, int | None]:
    """(schema exists, tables in it, application, version)."""
    exists = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = ?", (PG_SCHEMA,)).fetchone()[0] > 0
    tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = ?", (PG_SCHEMA,)).fetchone()[0]
    has_meta = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = ? AND tablename = 'meta'", (PG_SCHEMA,)).fetchone()[0]
    app = version = None
    if has_meta:
        rows = dict(conn.execute(f"SELECT key, value FROM {PG_SCHEMA}.meta").fetchall())
        app = rows.get("application")
        try:
            version = int(rows.get("schema_version", ""))
        except ValueError:
            version = None
    return exists, tables, app, version


def _check(label: str, state: tuple[bool, int, str | None, int | None], write: bool) -> bool:
    """True when the schema must be created or migrated; raises for anything not ours or too new."""
    exists, tables, app, version = state
    if tables and app != PG_APPLICATION:
        raise HistoryError(f"{label}: schema {PG_SCHEMA} holds {tables} table(s) but is not an smtpaudit history; nothing was written")
    if app == PG_APPLICATION and version is None:
        raise HistoryError(f"{label}: smtpaudit history without a readable schema version; nothing was written")
    if version is not None and version > LATEST:
        raise HistoryError(f"{label}: history schema version {version} is newer than this smtpaudit supports ({LATEST}); "
                           "upgrade smtpaudit (nothing was written)")
    if not write and version is None:
        raise HistoryError(f"{label}: no smtpaudit history here yet (record scans with --history first)")
    return version is None or version < LATEST


def _validate(store: HistoryStore, write: bool) -> None:
    conn = store.conn
    if not _check(str(store.path), _state(conn), write) or not write:
        return
    with store.transaction():
        # Re-read under the writers' lock: another process may have created or migrated it meanwhile.
        state = _state(conn)
        if not _check(str(store.path), state, write):
            return
        version = state[3] or 0
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
        conn.execute(f"SET LOCAL search_path TO {PG_SCHEMA}")
        for script in PG_MIGRATIONS[version:]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('application', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (PG_APPLICATION,))
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (str(LATEST),))
