"""Apply sql/NNNN_*.sql in order, each in its own transaction, under an advisory lock."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

log = logging.getLogger("goclaw.migrate")

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
LOCK_KEY = 0x60C1A7  # any constant; shared by every gateway process

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in sql_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; safe when several instances start at once. Returns applied names."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(CREATE_TABLE)
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for path in migration_files(sql_dir):
                if path.stem in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
                log.info("applied migration %s", path.stem)
                applied.append(path.stem)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied
