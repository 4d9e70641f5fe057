"""Traces and costs."""

from auth import Principal
from domain import usage


async def get_traces(principal: Principal, limit: int = 50, offset: int = 0, **filters):
    return await usage.list_traces(principal, limit, offset, **filters)


async def get_traces_by_traceid(principal: Principal, traceID: str):
    return await usage.get_trace(principal, traceID)


async def get_costs_summary(principal: Principal, **params):
    # `from` is a Python keyword, so the range arrives through **params
    return await usage.cost_summary(principal, params.get("from"), params.get("to"), params.get("agent_id"))
