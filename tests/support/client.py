"""The shared HTTP client: every response is validated against the served OpenAPI document."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict


class _Request:
    def __init__(self, request: httpx.Request, base_url: str) -> None:
        url = urlsplit(str(request.url))
        self.host_url = base_url
        self.path = url.path
        self.method = request.method.lower()
        self.body = request.content if isinstance(request.stream, httpx.ByteStream) else None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(httpx.QueryParams(url.query).multi_items()),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )
        self.full_url_pattern = base_url + url.path


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "").split(";")[0]
        self.headers = Headers(dict(response.headers))
        self.data = response.content


class ContractError(AssertionError):
    pass


class ApiClient(httpx.Client):
    """httpx.Client that checks each response against the document the server serves."""

    def __init__(self, base_url: str, openapi: OpenAPI, token: str | None = None, **kwargs: Any) -> None:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        super().__init__(base_url=base_url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)
        self.openapi = openapi
        self.validate = True

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        response = super().request(method, url, *args, **kwargs)
        if self.validate and not response.headers.get("content-type", "").startswith("text/event-stream"):
            self.check(response)
        return response

    def check(self, response: httpx.Response) -> None:
        request = response.request
        try:
            self.openapi.validate_response(_Request(request, str(self.base_url).rstrip("/")), _Response(response))
        except Exception as exc:  # openapi-core raises a family of errors; all mean "off-contract"
            detail = getattr(exc, "__cause__", None) or exc
            raise ContractError(
                f"{request.method} {request.url.path} → {response.status_code} violates the contract: "
                f"{exc}; {detail}\nbody: {response.text[:500]}"
            ) from exc

    def as_user(self, user_id: str) -> ApiClient:
        self.headers["X-GoClaw-User-Id"] = user_id
        return self


def load_openapi(base_url: str) -> OpenAPI:
    document = httpx.get(base_url + "/v1/openapi.json", timeout=10).json()
    return OpenAPI.from_dict(document)
