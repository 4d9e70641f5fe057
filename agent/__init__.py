"""The agent runtime's tool layer: what the think→act→observe loop offers the model and runs.

    from agent import ToolContext, tools_for_agent
    toolset = await tools_for_agent(principal, agent_row)
    request.tools = toolset.specs()
    result = await toolset.call(call.name, call.arguments, ToolContext(principal, agent_row, workspace))

`ToolSet.call` never raises for a tool's failure (bad arguments, unknown tool, timeout, crash):
it returns `ToolResult(is_error=True, content=<message for the model>)`. Every result is capped
in size and scrubbed of credentials before it leaves the tool layer.
"""

from agent.tools import Tool, ToolContext, ToolResult, ToolSet, tools_for_agent

__all__ = ["Tool", "ToolContext", "ToolResult", "ToolSet", "tools_for_agent"]
