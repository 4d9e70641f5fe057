"""Connexion's handler call, with what depends only on the operation worked out once.

Connexion 3.3 does, on every request: rebuild the decorators around the handler (signature
inspection included) and the operation's URI parser, wrap the request in a new request object,
parse the JSON body a second time (the validator parsed it already, then re-serialised it for
the handler) and ask the form parser for files even when the body is JSON. Here each operation
keeps the handler's argument names, its parameter definitions and URI parser, and takes the body
as `gateway.validation` parsed and validated it. The rules stay Connexion's: path and query
values are resolved by its URI parser and cast by its parameter functions, missing bodies get the
schema default, context entries (the Principal) go to arguments of the same name, and the return
value becomes a response through its response decorator."""

from __future__ import annotations

import asyncio
import collections.abc
import copy
import types
import typing as t

from connexion.apps.asynchronous import AsyncApi
from connexion.decorators.parameter import (
    _get_body_argument,
    _get_file_arguments,
    _get_query_arguments,
    _get_val_from_param,
    sanitized,
    unwrap_decorators,
)
from connexion.decorators.response import AsyncResponseDecorator
from connexion.exceptions import NonConformingResponseHeaders
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.operations import AbstractOperation
from connexion.utils import extract_content_type, inspect_function_arguments, is_null, is_nullable
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.validation import PARSED_BODY

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CompiledOperation:
    """The ASGI app of one operation: arguments → handler → response."""

    def __init__(self, operation: AbstractOperation, jsonifier: t.Any) -> None:
        self.operation = operation
        self.function = operation.function
        arguments, self.has_kwargs = inspect_function_arguments(unwrap_decorators(self.function))
        self.arguments = arguments
        self.is_async = asyncio.iscoroutinefunction(self.function)
        parameters = operation.parameters
        self.uri_parser = operation.uri_parser_class(parameters, operation.body_definition())
        self.path_definitions = {p["name"]: p for p in parameters if p["in"] == "path"}
        self.has_query = any(p["in"] == "query" for p in parameters) or self.has_kwargs
        self.body_name = sanitized(operation.body_name(None)) if operation.is_request_body_defined else None
        self.takes_body = self.body_name is not None and (self.body_name in arguments or self.has_kwargs)
        self.takes_files = operation.is_request_body_defined and any(c in FORM_TYPES for c in operation.consumes)
        self.context_names = None if self.has_kwargs else frozenset(arguments)
        self.responses = OperationResponses(operation, jsonifier)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kwargs = await self.arguments_for(scope, receive)
        result = await self.function(**kwargs) if self.is_async else await run_in_threadpool(self.function, **kwargs)
        await self.response_for(result)(scope, receive, send)

    async def arguments_for(self, scope: Scope, receive: Receive) -> dict[str, t.Any]:
        kwargs: dict[str, t.Any] = {}
        path_params = scope.get("path_params")
        if path_params:
            for name, value in self.uri_parser.resolve_path(path_params).items():
                definition = self.path_definitions.get(name)
                kwargs[sanitized(name)] = value if definition is None else _get_val_from_param(value, definition)
        if self.has_query:
            query = QueryParams(scope.get("query_string", b""))
            resolved = self.uri_parser.resolve_query({k: query.getlist(k) for k in query})
            kwargs.update(_get_query_arguments(resolved, operation=self.operation, arguments=self.arguments,
                                               has_kwargs=self.has_kwargs, sanitize=sanitized))
        extensions = scope.get("extensions") or {}
        if self.takes_files:
            request = ConnexionRequest(scope, receive, uri_parser=self.uri_parser)
            if self.takes_body:
                kwargs.update(self._body_argument(await request.get_body(), request.mimetype))
            schema = self.operation.body_schema(request.mimetype)
            kwargs.update(_get_file_arguments(await request.files(), self.arguments, schema, self.has_kwargs))
        elif self.takes_body:
            parsed = extensions.get(PARSED_BODY)
            if parsed is None:  # no validator ran (no body schema): Connexion's reading of the body
                request = ConnexionRequest(scope, receive, uri_parser=self.uri_parser)
                kwargs.update(self._body_argument(await request.get_body(), request.mimetype))
            else:
                kwargs.update(self._json_argument(*parsed))
        for key, value in (extensions.get("connexion_context") or {}).items():
            if self.context_names is None or key in self.context_names:
                kwargs[key] = value
        return kwargs

    def _json_argument(self, schema: dict, body: t.Any) -> dict[str, t.Any]:
        """Connexion's body argument for JSON: null stays null where the schema allows it, a
        missing body is the schema's default (the schema the validator checked the body against)."""
        if is_nullable(schema) and is_null(body):
            body = None
        elif body is None:
            body = copy.deepcopy(schema.get("default", {}))
        return {self.body_name: body}

    def _body_argument(self, body: t.Any, mime_type: str) -> dict[str, t.Any]:
        return _get_body_argument(body, operation=self.operation, arguments=self.arguments,
                                  has_kwargs=self.has_kwargs, sanitize=sanitized, content_type=mime_type)

    def response_for(self, result: t.Any) -> Response:
        if isinstance(result, Response):
            return result
        if isinstance(result, ConnexionResponse):
            return StarletteFramework.connexion_to_framework_response(result)
        return self.responses.build_framework_response(result)


class OperationResponses(AsyncResponseDecorator):
    """Connexion's response building for one operation, with the operation's media types read
    once (Connexion reads them per response, through its context-local `operation` proxy)."""

    def __init__(self, operation: AbstractOperation, jsonifier: t.Any) -> None:
        super().__init__(framework=StarletteFramework, jsonifier=jsonifier)
        self.produces = list(dict.fromkeys(operation.produces))
        self.declared = operation.produces

    def _infer_content_type(self, data: t.Any, headers: dict) -> str | None:  # type: ignore[override]
        """The rule of Connexion's `_infer_content_type`: a Content-Type the handler set must be one
        the operation produces; otherwise the only one it produces (JSON when it declares none and
        there is a body); with several, text for a str and octet-stream for bytes or iterators."""
        content_type = extract_content_type(headers)
        produces = self.produces or (["application/json"] if data is not None else [])
        if content_type:
            if content_type not in produces:
                raise NonConformingResponseHeaders(
                    f"Returned content type ({content_type}) is not defined in operation spec ({self.declared})."
                )
            return content_type
        if len(produces) <= 1:
            return produces[0] if produces else None
        wanted = "text/plain" if isinstance(data, str) else (
            "application/octet-stream" if isinstance(data, bytes | types.GeneratorType | collections.abc.Iterator)
            else None)
        chosen = next((p for p in produces if wanted and wanted in p), None)
        if chosen is None:
            raise NonConformingResponseHeaders(
                "Multiple response content types are defined in the operation spec, but the handler "
                "response did not specify which one to return."
            )
        return chosen


class GatewayApi(AsyncApi):
    def make_operation(self, operation: AbstractOperation) -> CompiledOperation:  # type: ignore[override]
        return CompiledOperation(operation, self.jsonifier)
