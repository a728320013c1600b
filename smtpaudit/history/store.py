"""Open, validate, migrate and write the history database (SQLite, stdlib ``sqlite3``).

Safety properties:

* A file that is not ours is never written: the SQLite header, ``application_id`` and the
  schema version are checked before any pragma or write (corrupt, foreign or newer => error).
* Migrations and each recorded scan are single ``BEGIN IMMEDIATE`` transactions: two shards
  recording at once queue on SQLite's lock (WAL mode, busy timeout) and both land whole.
* Read commands open the file read-only.

Every failure a user can cause is a ``HistoryError`` with one line naming the file.
``postgresql://`` URLs are opened by ``history.pg`` into the same ``HistoryStore``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from smtpaudit.history import codec, shape
from smtpaudit.history.migrations import APPLICATION_ID, LATEST, MIGRATIONS

SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT = 60.0  # seconds a writer waits for another writer (a shard) to finish
BUSY_ENV = "SMTPAUDIT_HISTORY_BUSY_TIMEOUT"


class HistoryError(Exception):
    """The history database cannot be used as asked; the message names the file and why."""


@dataclass(frozen=True)
class Recorded:
    scan_id: int
    created: bool  # False: this very report was already recorded
    night: str
    endpoints: int
    findings: int


def busy_timeout() -> float:
    value = os.environ.get(BUSY_ENV)
    if not value:
        return DEFAULT_BUSY_TIMEOUT
    try:
        return max(0.0, float(value))
    except ValueError:
        raise HistoryError(f"{BUSY_ENV}={value!r}: expected a number of seconds") from None


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip():
        yield buf


class SqliteBackend:
    """What differs between SQLite and PostgreSQL (``pg.PgBackend``): write locking, space
    reclaim and error translation. SQL is written once, in SQLite's dialect."""

    name = "sqlite"

    def begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock now: writers queue, never deadlock

    def compact(self, conn: Any) -> None:
        try:
            conn.execute("VACUUM")  # give the space back; harmless to skip when busy
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass

    def translate(self, label: str, exc: BaseException, doing: str, timeout: float) -> HistoryError | None:
        if isinstance(exc, sqlite3.OperationalError):
            return _translate(label, exc, doing, timeout)
        if isinstance(exc, sqlite3.DatabaseError):
            return HistoryError(f"{label}: history database is corrupt ({exc}) while {doing}")
        return None


class HistoryStore:
    """One open history database."""

    def __init__(self, path: Path | str, conn: Any, *, writable: bool, timeout: float, backend: Any = None) -> None:
        self.path = path  # a file, or a PostgreSQL URL without its password: shown in messages
        self.backend = backend or SqliteBackend()
        self.conn = conn
        self.writable = writable
        self.timeout = timeout
        self._blob_cache: dict[str, Any] = {}
        self._raw_cache: dict[str, bytes] = {}

    # ------------------------------------------------------------------ errors
    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Translate SQLite errors into one-line HistoryErrors."""
        try:
            yield
        except HistoryError:
            raise
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            # A part that does not decode is damage too, never a traceback.
            raise HistoryError(f"{self.path}: history database is damaged ({type(exc).__name__}: {exc}) while {doing}") from None
        except Exception as exc:
            translated = self.backend.translate(str(self.path), exc, doing, self.timeout)
            if translated is None:
                raise
            raise translated from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if not self.writable:
            raise HistoryError(f"{self.path}: opened read-only")
        self.backend.begin_write(self.conn)
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def check_writable(self) -> None:
        """Take and release the write lock: a locked database fails before a scan, not after it."""
        with self.errors("checking that the database can be written"):
            with self.transaction():
                pass

    # ------------------------------------------------------------------ blobs
    def raw(self, h: str) -> bytes:
        """A part's JSON bytes (decompressed with its base when it has one)."""
        if h not in self._raw_cache:
            row = self.conn.execute("SELECT codec, base, data FROM blob WHERE hash = ?", (h,)).fetchone()
            if row is None:
                raise KeyError(f"missing part {h}")
            base = self.raw(row[1]) if row[1] else None
            data = codec.decompress(row[0], bytes(row[2]), base)
            if codec.digest(data) != h:
                raise ValueError(f"part {h} does not match its hash")
            if len(self._raw_cache) > 4096:
                self._raw_cache.clear()
            self._raw_cache[h] = data
        return self._raw_cache[h]

    def blob(self, h: str) -> Any:
        if h not in self._blob_cache:
            if len(self._blob_cache) > 4096:
                self._blob_cache.clear()
            self._blob_cache[h] = json.loads(self.raw(h))
        return self._blob_cache[h]

    def _bases(self, hashes: list[str]) -> dict[str, str | None]:
        """hash -> its base (None for a plain part), for the hashes the database holds."""
        found: dict[str, str | None] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            q = f"SELECT hash, base FROM blob WHERE hash IN ({','.join('?' * len(chunk))})"
            found.update((r[0], r[1]) for r in self.conn.execute(q, chunk))
        return found

    def _previous_kinds(self, endpoint_ids: list[str]) -> dict[str, dict[str, str]]:
        """The parts (by kind) of each endpoint's latest recorded observation: next night's delta bases."""
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(endpoint_ids), 500):
            chunk = endpoint_ids[i:i + 500]
            q = (f"SELECT endpoint_id, entry FROM observation WHERE id IN (SELECT max(id) FROM observation "
                 f"WHERE endpoint_id IN ({','.join('?' * len(chunk))}) GROUP BY endpoint_id)")
            for eid, entry in self.conn.execute(q, chunk).fetchall():
                out[eid] = codec.kinds_of(entry, self.blob)
        return out

    def _pack(self, parts: codec.Parts, candidates: dict[str, str]) -> dict[str, tuple[str | None, bytes]]:
        """Compress the parts the database does not hold: against a base when that is smaller.
        ``candidates`` maps a new part to the previous version of the same kind."""
        known = self._bases(list(parts.blobs) + list(set(candidates.values())))
        packed: dict[str, tuple[str | None, bytes]] = {}
        for h, data in parts.blobs.items():
            if h in known:
                continue
            plain = codec.compress(data)
            best: tuple[str | None, bytes] = (None, plain)
            prev = candidates.get(h)
            if prev is not None and prev in known:
                base = known[prev] or prev  # bases are plain parts: reading needs at most one more
                delta = codec.compress(data, self.raw(base))
                if len(delta) < len(plain):
                    best = (base, delta)
            packed[h] = best
        return packed

    # ------------------------------------------------------------------ record
    def record(self, report: dict[str, Any], *, source: str | None = None) -> Recorded:
        """Record one report (a scan, a shard or merged shards) as one scan; idempotent."""
        with self.errors("recording the scan"):
            return self._record(report, source)

    def _record(self, report: dict[str, Any], source: str | None) -> Recorded:
        try:
            started = shape.iso(shape.parse_time(report["started"]))
        except (KeyError, ValueError, TypeError):
            raise HistoryError(f"report has no valid 'started' time ({report.get('started')!r}): cannot place it in the history") from None
        parts = codec.Parts()
        skeleton = codec.split_report(report, parts)
        ruleset = report.get("ruleset") if isinstance(report.get("ruleset"), dict) else {}
        rows, endpoints, entry_kinds = [], [], {}
        for pos, entry in enumerate(report.get("endpoints") or []):
            try:
                row, ep_row, kinds = self._observation(pos, entry, parts, ruleset.get("rules"))
            except (KeyError, TypeError, AttributeError) as exc:
                raise HistoryError(f"report endpoint #{pos + 1} lacks what history needs ({type(exc).__name__}: {exc}); "
                                   "nothing was recorded") from None
            rows.append(row)
            endpoints.append(ep_row)
            entry_kinds[row["endpoint_id"]] = kinds
        # Compress outside the write lock (CPU work); what another writer or a prune changed
        # meanwhile is re-checked under the lock.
        previous = self._previous_kinds(list(entry_kinds))
        candidates = {h: previous[eid][kind] for eid, kinds in entry_kinds.items() if eid in previous
                      for kind, h in kinds.items() if kind in previous[eid] and previous[eid][kind] != h}
        packed = self._pack(parts, candidates)
        night = shape.night(started)
        with self.transaction() as c:
            report_hash = codec.digest(codec.canonical(report))
            row = c.execute("SELECT id FROM scan WHERE report_hash = ?", (report_hash,)).fetchone()  # idempotent
            if row is not None:
                return Recorded(row[0], False, night, len(rows), sum(len(r["findings"]) for r in rows))
            held = self._bases(list(parts.blobs) + [b for b, _ in packed.values() if b])
            inserts = []
            for h in sorted(set(parts.blobs) - set(held)):
                base, data = packed.get(h, (None, b""))
                if h not in packed or (base is not None and base not in held):
                    base, data = None, codec.compress(parts.blobs[h])  # its base was pruned meanwhile
                inserts.append((h, codec.CODEC, base, len(parts.blobs[h]), data))
            c.executemany("INSERT OR IGNORE INTO blob (hash, codec, base, size, data) VALUES (?, ?, ?, ?, ?)", inserts)
            c.executemany("INSERT INTO endpoint (id, url, host, port, mode, role) VALUES (?, ?, ?, ?, ?, ?) "
                          "ON CONFLICT(id) DO UPDATE SET url = excluded.url, host = excluded.host, port = excluded.port, "
                          "mode = excluded.mode, role = excluded.role", endpoints)
            options = (report.get("invocation") or {}).get("options") or {}
            cur = c.execute(
                "INSERT INTO scan (started, night, finished, recorded, tool_version, ruleset_digest, shard, report_hash, skeleton, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (started, night, report.get("finished"), shape.iso(datetime.now(timezone.utc)),
                 (report.get("tool") or {}).get("version"), ruleset.get("digest"), options.get("shard"), report_hash, skeleton, source))
            scan_id = cur.fetchone()[0]
            n_findings = 0
            for r in rows:
                cur = c.execute(
                    "INSERT INTO observation (scan_id, position, endpoint_id, started, night, status, grade, score, software, "
                    "cert_sha256, cert_not_after, judged, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (scan_id, r["position"], r["endpoint_id"], started, night, r["status"], r["grade"], r["score"], r["software"],
                     r["cert_sha256"], r["cert_not_after"], r["judged"], r["entry"]))
                oid = cur.fetchone()[0]
                values = []
                for fp, rule_id, severity, suppressed, title, message in r["findings"]:
                    key = c.execute("INSERT INTO finding_key (fingerprint, endpoint_id, rule_id, title, message) VALUES (?, ?, ?, ?, ?) "
                                    "ON CONFLICT(fingerprint) DO UPDATE SET title = excluded.title, message = excluded.message "
                                    "RETURNING id", (fp, r["endpoint_id"], rule_id, title, message)).fetchone()[0]
                    values.append((oid, key, severity, suppressed))
                c.executemany("INSERT OR IGNORE INTO finding (observation_id, key, severity, suppressed) VALUES (?, ?, ?, ?)", values)
                n_findings += len(r["findings"])
        return Recorded(scan_id, True, night, len(rows), n_findings)

    @staticmethod
    def _observation(pos: int, entry: dict[str, Any], parts: codec.Parts, rules: Any) -> tuple[dict[str, Any], tuple, dict[str, str]]:
        """One endpoint entry as an observation row, its endpoint row and its parts by kind."""
        ep = entry["endpoint"]
        eid = str(ep["id"])
        facts = entry.get("facts") or {}
        grade, score = shape.grade_and_score(entry)
        findings = []
        for f in entry.get("findings") or []:
            fp = f.get("fingerprint") or hashlib.sha256(f"{f['rule_id']}|{eid}".encode()).hexdigest()[:32]
            findings.append((fp, str(f["rule_id"]), str(f["severity"]), 1 if f.get("suppressed") else 0, f.get("title"), f.get("message")))
        entry_hash, kinds = codec.split_entry(entry, parts)
        row = {
            "position": pos, "endpoint_id": eid, "status": shape.status(entry), "grade": grade, "score": score,
            "software": shape.software(facts), "cert_sha256": facts.get("tls.cert.sha256"),
            "cert_not_after": facts.get("tls.cert.not_after"),
            "judged": parts.put(shape.judged_rules(entry, rules)),
            "entry": entry_hash,
            "findings": findings,
        }
        ep_row = (eid, ep.get("url") or eid, ep.get("host"), ep.get("port"), ep.get("mode"), ep.get("role"))
        return row, ep_row, kinds

    # ------------------------------------------------------------------ reports back
    def scan_report(self, scan_id: int) -> dict[str, Any]:
        """The full JSON report of one recorded scan, as it was recorded."""
        with self.errors("reading a recorded report"):
            row = self.conn.execute("SELECT skeleton FROM scan WHERE id = ?", (scan_id,)).fetchone()
            if row is None:
                raise HistoryError(f"{self.path}: no scan {scan_id}")
            entries = [codec.join_entry(self.blob(h), self.blob) for (h,) in
                       self.conn.execute("SELECT entry FROM observation WHERE scan_id = ? ORDER BY position", (scan_id,))]
            return codec.join_report(self.blob(row[0]), entries, self.blob)

    def night_report(self, night: str) -> dict[str, Any] | None:
        """The fleet as seen on one night: every scan (shard) of that night merged, the latest
        observation of each endpoint winning; the rule sets are united."""
        with self.errors("reading a recorded night"):
            scans = self.conn.execute("SELECT id, skeleton FROM scan WHERE night = ? ORDER BY started, id", (night,)).fetchall()
            if not scans:
                return None
            latest: dict[str, str] = {}
            for (eid, h) in self.conn.execute(
                    "SELECT o.endpoint_id, o.entry FROM observation o JOIN scan s ON s.id = o.scan_id "
                    "WHERE s.night = ? ORDER BY s.started, s.id, o.position", (night,)):
                latest[eid] = h  # later observations replace earlier ones; first-seen order kept
            rules: dict[str, Any] = {}
            for _, sk in scans:
                skel = self.blob(sk)
                if skel.get("rules"):
                    rules.update(self.blob(skel["rules"]))
            skeleton = dict(self.blob(scans[-1][1]))
            report = codec.join_report(skeleton, [codec.join_entry(self.blob(h), self.blob) for h in latest.values()], self.blob)
            report["ruleset"] = {**report.get("ruleset", {}), "rules": rules}
            report["history"] = {"night": night, "scans": [s[0] for s in scans]}
            return report

    def previous_night(self, started: str) -> str | None:
        """The most recent night before the night of ``started``."""
        with self.errors("reading the history"):
            row = self.conn.execute("SELECT max(night) FROM scan WHERE night < ?", (shape.night(started),)).fetchone()
            return row[0] if row else None

    # ------------------------------------------------------------------ retention
    def prune(self, keep_days: int) -> dict[str, Any]:
        """Drop scans older than ``keep_days`` before the newest recorded scan (never the newest
        night: a stopped nightly job does not empty the history), then unreferenced parts."""
        with self.errors("pruning"):
            with self.transaction() as c:
                newest = c.execute("SELECT max(started) FROM scan").fetchone()[0]
                if newest is None:
                    return {"scans_deleted": 0, "parts_deleted": 0, "cutoff": None}
                cutoff = shape.iso(shape.parse_time(newest) - timedelta(days=keep_days))
                doomed = [r[0] for r in c.execute("SELECT id FROM scan WHERE started < ?", (cutoff,))]
                for i in range(0, len(doomed), 500):
                    chunk = doomed[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    c.execute(f"DELETE FROM finding WHERE observation_id IN (SELECT id FROM observation WHERE scan_id IN ({marks}))", chunk)
                    c.execute(f"DELETE FROM observation WHERE scan_id IN ({marks})", chunk)
                    c.execute(f"DELETE FROM scan WHERE id IN ({marks})", chunk)
                c.execute("DELETE FROM endpoint WHERE id NOT IN (SELECT DISTINCT endpoint_id FROM observation)")
                c.execute("DELETE FROM finding_key WHERE id NOT IN (SELECT DISTINCT key FROM finding)")
                live: set[str] = set()
                for (h,) in c.execute("SELECT skeleton FROM scan"):
                    live.add(h)
                    rules = self.blob(h).get("rules")
                    if rules:
                        live.add(rules)
                for (j, e) in c.execute("SELECT DISTINCT judged, entry FROM observation").fetchall():
                    live.add(j)
                    live.update(codec.kinds_of(e, self.blob).values())
                # the base (preset dictionary) of a live part stays too
                live.update(b for (h, b) in c.execute("SELECT hash, base FROM blob WHERE base IS NOT NULL") if h in live)
                dead = [h for (h,) in c.execute("SELECT hash FROM blob") if h not in live]
                c.executemany("DELETE FROM blob WHERE hash = ?", [(h,) for h in dead])
            self._blob_cache.clear()
            self._raw_cache.clear()
            self.backend.compact(self.conn)
            return {"scans_deleted": len(doomed), "parts_deleted": len(dead), "cutoff": cutoff}


def _translate(path: Path | str, exc: sqlite3.OperationalError, doing: str, timeout: float) -> HistoryError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return HistoryError(f"{path}: history database is locked by another process (waited {timeout:g} s) while {doing}; "
                            f"try again when it has finished (or raise {BUSY_ENV})")
    if "not a database" in text or "malformed" in text:
        return HistoryError(f"{path}: history database is corrupt ({text})")
    if "readonly" in text or "read-only" in text:
        return HistoryError(f"{path}: cannot write the history database ({text})")
    return HistoryError(f"{path}: history database error while {doing}: {text}")


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read the history database: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise HistoryError(f"{path}: not an SQLite database (corrupt, or another kind of file); nothing was written")


def open_store(path: str | Path, *, write: bool, timeout: float | None = None) -> HistoryStore:
    """Open (and for writing, create or migrate) a history database, refusing anything that is
    not an smtpaudit history of a schema this program knows."""
    wait = busy_timeout() if timeout is None else timeout
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        from smtpaudit.history.pg import open_pg_store

        return open_pg_store(path, write=write, timeout=wait)
    p = Path(path)
    exists = p.exists()
    if p.is_dir():
        raise HistoryError(f"{p}: is a directory, not a history database")
    if not exists and not write:
        raise HistoryError(f"{p}: no such history database (record scans with --history {p} first)")
    if exists:
        _check_header(p)
    elif not p.parent.is_dir():
        raise HistoryError(f"{p}: directory {p.parent} does not exist")
    try:
        if write:
            conn = sqlite3.connect(str(p), timeout=wait, isolation_level=None)
        else:
            conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, timeout=wait, isolation_level=None)
    except sqlite3.Error as exc:
        raise HistoryError(f"{p}: cannot open the history database: {exc}") from None
    store = HistoryStore(p, conn, writable=write, timeout=wait)
    give_up = time.monotonic() + wait
    try:
        while True:
            try:
                with store.errors("opening"):
                    _open_steps(store, write)
                break
            except HistoryError as exc:
                # Two shards creating the same new database race on its first schema and on the
                # switch to WAL, which SQLite answers "locked" at once instead of waiting out the
                # busy timeout: try again until the same deadline.
                if "locked" not in str(exc) or time.monotonic() >= give_up:
                    raise
                time.sleep(0.05)
    except BaseException:
        conn.close()
        raise
    return store


def _open_steps(store: HistoryStore, write: bool) -> None:
    conn = store.conn
    _validate(store, write)
    if write:
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the nightly writer
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, much faster
        _migrate(store)


def _validate(store: HistoryStore, write: bool) -> None:
    conn, p = store.conn, store.path
    # One read transaction: the three answers must come from one snapshot, or a shard that is
    # creating the database commits between them and a half-seen history looks foreign.
    conn.execute("BEGIN")
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    if app != APPLICATION_ID:
        if app == 0 and version == 0 and objects == 0:
            if not write:
                raise HistoryError(f"{p}: empty database, no scan recorded yet")
            return  # a new (or empty) file: ours to create
        raise HistoryError(f"{p}: an SQLite database, but not an smtpaudit history (application_id {app:#x}, "
                           f"{objects} schema object(s)); nothing was written")
    if version > LATEST:
        raise HistoryError(f"{p}: history schema version {version} is newer than this smtpaudit supports ({LATEST}); "
                           f"upgrade smtpaudit (nothing was written)")
    if write:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise HistoryError(f"{p}: history database is corrupt (integrity check: {result}); nothing was written")


def _migrate(store: HistoryStore) -> None:
    conn = store.conn
    if conn.execute("PRAGMA user_version").fetchone()[0] >= LATEST:
        return
    with store.transaction():
        # Re-read under the write lock: a concurrent opener may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > LATEST:
            raise HistoryError(f"{store.path}: history schema version {version} is newer than this smtpaudit supports ({LATEST})")
        for script in MIGRATIONS[version:]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {LATEST}")

