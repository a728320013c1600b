"""The history database schema as an ordered list of migrations (version N = the first N scripts).

A database records its version in ``PRAGMA user_version`` and is marked as ours with
``PRAGMA application_id``. Migrations run inside one ``BEGIN IMMEDIATE`` transaction together with
the version bump, so a crash or a concurrent opener never sees a half-migrated schema (SQLite DDL
is transactional). Append new migrations; never edit a released one.
"""

from __future__ import annotations

# "SMTA" as a big-endian 32-bit integer: `file` and sqlite3 show it, and a foreign SQLite file
# (another application's database) is told apart from ours before anything is written to it.
APPLICATION_ID = 0x534D5441

MIGRATIONS: tuple[str, ...] = (
    # 1: content-addressed blobs, scans, endpoints, per-endpoint observations, findings per observation (keys interned).
    """
    CREATE TABLE blob (
        hash  TEXT PRIMARY KEY,          -- sha256 (hex, 32 chars) of the uncompressed canonical JSON
        codec TEXT NOT NULL,             -- 'zlib'
        base  TEXT,                      -- part whose JSON is the zlib preset dictionary (a plain part)
        size  INTEGER NOT NULL,          -- uncompressed bytes
        data  BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE scan (
        id             INTEGER PRIMARY KEY,
        started        TEXT NOT NULL,    -- report 'started', UTC, ISO 8601 with Z
        night          TEXT NOT NULL,    -- the UTC date of 'started': the unit of trends
        finished       TEXT,
        recorded       TEXT NOT NULL,    -- when it was written here
        tool_version   TEXT,
        ruleset_digest TEXT,
        shard          TEXT,
        report_hash    TEXT NOT NULL UNIQUE,  -- the same report recorded twice is one scan
        skeleton       TEXT NOT NULL REFERENCES blob(hash),
        source         TEXT              -- file the report was read from, when known
    );
    CREATE INDEX scan_night ON scan(night, started);
    CREATE TABLE endpoint (
        id   TEXT PRIMARY KEY,
        url  TEXT NOT NULL,
        host TEXT, port INTEGER, mode TEXT, role TEXT
    ) WITHOUT ROWID;
    CREATE TABLE observation (
        id             INTEGER PRIMARY KEY,
        scan_id        INTEGER NOT NULL REFERENCES scan(id) ON DELETE CASCADE,
        position       INTEGER NOT NULL,
        endpoint_id    TEXT NOT NULL REFERENCES endpoint(id),
        started        TEXT NOT NULL,
        night          TEXT NOT NULL,
        status         TEXT NOT NULL,    -- complete | incomplete | unreachable (older reports normalised)
        grade          TEXT,             -- null unless complete (new contract) or not graded
        score          INTEGER,
        software       TEXT,
        cert_sha256    TEXT,
        cert_not_after TEXT,
        judged         TEXT NOT NULL REFERENCES blob(hash),   -- sorted rule ids this scan judged here
        entry          TEXT NOT NULL REFERENCES blob(hash)    -- the report entry (parts by reference)
    );
    CREATE INDEX observation_endpoint ON observation(endpoint_id, started);
    CREATE INDEX observation_scan ON observation(scan_id);
    CREATE TABLE finding_key (           -- one row per finding ever seen (fingerprint = rule + endpoint)
        id          INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        endpoint_id TEXT NOT NULL,
        rule_id     TEXT NOT NULL,
        title       TEXT,                -- as last recorded
        message     TEXT
    );
    CREATE TABLE finding (               -- a finding reported by one observation (small rows: one per night)
        observation_id INTEGER NOT NULL REFERENCES observation(id) ON DELETE CASCADE,
        key            INTEGER NOT NULL REFERENCES finding_key(id),
        severity       TEXT NOT NULL,
        suppressed     INTEGER NOT NULL,
        PRIMARY KEY (observation_id, key)
    ) WITHOUT ROWID;
    """,
)

LATEST = len(MIGRATIONS)
