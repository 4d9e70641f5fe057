"""Which adapter speaks for each provider type, and a cheap credential check."""

from __future__ import annotations

import asyncio

import httpx

from llm.anthropic import AnthropicClient
from llm.errors import UpstreamError
from llm.gemini import GeminiClient
from llm.openai_compat import OpenAICompatClient
from llm.types import ChatRequest, Message

Adapter = OpenAICompatClient | AnthropicClient | GeminiClient

PROVIDER_TYPES: dict[str, tuple[type[Adapter], str]] = {
    "openai_compat": (OpenAICompatClient, "https://api.openai.com/v1"),
    "groq": (OpenAICompatClient, "https://api.groq.com/openai/v1"),
    "deepseek": (OpenAICompatClient, "https://api.deepseek.com/v1"),
    "mistral": (OpenAICompatClient, "https://api.mistral.ai/v1"),
    "xai": (OpenAICompatClient, "https://api.x.ai/v1"),
    "ollama": (OpenAICompatClient, "http://localhost:11434/v1"),
    "anthropic_native": (AnthropicClient, "https://api.anthropic.com/v1"),
    "gemini_native": (GeminiClient, "https://generativelanguage.googleapis.com/v1beta"),
}

KEYLESS_TYPES = frozenset({"ollama"})
"""Provider types that work without an API key."""

VERIFY_TIMEOUT = 15.0


def _base_for(provider_type: str, api_base: str | None, default: str) -> str:
    base = (api_base or default).rstrip("/")
    if provider_type == "ollama" and not base.endswith("/v1"):
        base += "/v1"  # Ollama is often configured by host only
    if provider_type == "gemini_native":
        # Older configs point at Gemini's OpenAI-compat shim; we speak native.
        base = base.removesuffix("/openai")
    return base


def make_client(
    provider_type: str,
    api_base: str | None,
    api_key: str | None,
    http: httpx.AsyncClient,
    timeout: float | None = None,
) -> Adapter:
    """Build the adapter for a provider row; an empty `api_base` means the
    type's default; `timeout` (seconds) overrides the shared client's read
    timeout for this provider. Raises ValueError for an unknown type."""
    try:
        cls, default_base = PROVIDER_TYPES[provider_type]
    except KeyError:
        raise ValueError(f"unknown provider type: {provider_type!r}") from None
    limit = httpx.Timeout(10.0, read=timeout) if timeout else None
    return cls(http, _base_for(provider_type, api_base, default_base), api_key or "", timeout=limit)


async def verify(adapter: Adapter, model: str) -> tuple[bool, str | None]:
    """Check key + model with the smallest real call ("hi", 1 token).

    Never raises: the answer is meant for a UI, so every failure becomes
    (False, reason). Bounded by VERIFY_TIMEOUT overall, retries included.
    """
    req = ChatRequest(model=model, messages=[Message(role="user", content="hi")], max_tokens=1)
    try:
        async with asyncio.timeout(VERIFY_TIMEOUT):
            await adapter.chat(req)
    except UpstreamError as exc:
        return False, exc.message
    except TimeoutError:
        return False, f"no answer within {VERIFY_TIMEOUT:g}s"
    except Exception as exc:  # the contract is "never raises"
        return False, str(exc) or type(exc).__name__
    return True, None
