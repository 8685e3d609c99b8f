"""The PostgreSQL store's schema, created and upgraded by the control plane itself.

Each entry of MIGRATIONS upgrades the schema by one version and is applied at
most once, recorded in `gossamer_schema`. Replicas starting together take one
advisory lock first, so exactly one of them applies a migration and the others
find it done. A database whose schema is newer than this code knows is refused:
an old binary writing to a newer layout could lose what it does not understand.
Table and column names carry a `gossamer_` prefix so the store can share a
database (or live in a schema chosen with `options=-csearch_path=...`).

Columns are `COLLATE "C"`, so listings sort bytewise like the other backends
whatever the database's locale. Bodies are stored as JSON text, not jsonb:
jsonb would reorder keys, and a body must come back as it was written.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from gossamer.store.base import IncompatibleSchema

# Any constant unique to Gossamer: the advisory lock serializing migrations.
_MIGRATION_LOCK = 0x676F_7373_616D_6572 >> 1  # "gossamer", as a positive bigint

MIGRATIONS: tuple[str, ...] = (
    # 1: resources, the revision counter and the event history.
    """
    CREATE TABLE gossamer_revision (
        id integer PRIMARY KEY CHECK (id = 1),
        revision bigint NOT NULL
    );
    INSERT INTO gossamer_revision (id, revision) VALUES (1, 0);
    CREATE TABLE gossamer_resources (
        kind text COLLATE "C" NOT NULL,
        namespace text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        revision bigint NOT NULL,
        body text NOT NULL,
        PRIMARY KEY (kind, namespace, name)
    );
    CREATE TABLE gossamer_events (
        revision bigint PRIMARY KEY,
        type text NOT NULL CHECK (type IN ('PUT', 'DELETE')),
        kind text COLLATE "C" NOT NULL,
        namespace text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        body text NOT NULL,
        write_id uuid NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: AsyncConnection[Any]) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS gossamer_schema ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM gossamer_schema")
        row = await cursor.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise IncompatibleSchema(
                f"the database has store schema version {found}, newer than the"
                f" {SCHEMA_VERSION} this Gossamer knows; run a newer Gossamer"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO gossamer_schema (version) VALUES (%s)", (version,))
    return found
