"""LLM provider clients: one shared HTTP base and one adapter per wire format.

Usage: create one `httpx.AsyncClient` with `create_http_client()` at startup,
build adapters with `make_client(...)`, and call `chat` / `stream` /
`list_models` / `embed`. Every failure surfaces as `UpstreamError`.
"""

from llm.anthropic import AnthropicClient
from llm.base import BaseClient, close_http_client, create_http_client
from llm.errors import UpstreamError, UpstreamTimeout
from llm.gemini import GeminiClient
from llm.openai_compat import OpenAICompatClient
from llm.registry import KEYLESS_TYPES, PROVIDER_TYPES, Adapter, make_client, verify
from llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    Model,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "KEYLESS_TYPES",
    "PROVIDER_TYPES",
    "Adapter",
    "AnthropicClient",
    "BaseClient",
    "ChatRequest",
    "ChatResponse",
    "GeminiClient",
    "Message",
    "Model",
    "OpenAICompatClient",
    "StreamEvent",
    "ToolCall",
    "ToolSpec",
    "UpstreamError",
    "UpstreamTimeout",
    "Usage",
    "close_http_client",
    "create_http_client",
    "make_client",
    "verify",
]
