"""Embedded PostgreSQL (pgserver ships PostgreSQL 16 + pgvector in its wheel) for `make run`
and tests when no GOCLAW_POSTGRES_DSN is given."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("goclaw.embedded")


def start(data_dir: Path):
    """Start (or attach to) the server in `data_dir/pg`; returns (server, dsn)."""
    import pgserver  # imported lazily: production deployments never need it

    pg_dir = (data_dir / "pg").resolve()
    pg_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # pgserver runs postgres as the `pgserver` user when started as root; it must be able to
        # reach the directory through every parent (the directory itself must stay 0700).
        for parent in pg_dir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    server = pgserver.get_server(pg_dir, cleanup_mode="stop")
    dsn = server.get_uri()
    log.info("embedded PostgreSQL ready in %s", pg_dir)
    return server, dsn
