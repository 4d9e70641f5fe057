"""Usage analytics."""

from auth import Principal
from domain import usage


async def get_usage_timeseries(principal: Principal, period: str = "24h", agent_id: str | None = None):
    return await usage.timeseries(principal, period, agent_id)


async def get_usage_summary(principal: Principal, period: str = "24h", agent_id: str | None = None):
    return await usage.summary(principal, period, agent_id)
