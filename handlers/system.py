"""System: health and the live route table."""

import time

import db
from auth import Principal
from gateway import state


async def get_health():
    database = "ok" if await db.ping() else "error"
    return {
        "status": "ok" if database == "ok" else "degraded",
        "uptime_ms": int((time.monotonic() - state.started_at) * 1000),
        "mode": "managed",
        "database": database,
        "protocol": 3,
    }


async def get_system_routes(principal: Principal):
    routes = state.resolver.routes
    implemented = sum(1 for r in routes if r["implemented"])
    return {"routes": routes, "implemented": implemented, "total": len(routes)}
