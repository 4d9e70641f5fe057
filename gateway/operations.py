"""Connexion's handler call, without redoing per request what depends only on the operation.

Connexion 3.3 rebuilds, on every request, the decorators around a handler (parameters,
response; signature inspection included) and the operation's URI parser. Neither depends on
the request, so here each operation builds them on its first request and keeps them; what
runs per request (parsing, validation, argument passing, response building) is Connexion's."""

from __future__ import annotations

import functools
import typing as t

from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.operations import AbstractOperation


class DecorateOnce(StarletteDecorator):
    def __call__(self, function: t.Callable) -> t.Callable:
        built: tuple[t.Callable, t.Any] | None = None

        @functools.wraps(function)
        async def wrapper(*_args: t.Any, **_kwargs: t.Any) -> t.Any:
            nonlocal built
            if built is None:  # inside the first request: Connexion's `operation` context is set
                built = (self.decorate(function), self.uri_parser)
            decorated, uri_parser = built
            return await decorated(self.framework.get_request(uri_parser=uri_parser, scope=scope, receive=receive))

        return wrapper


class DecoratedOnceOperation(AsyncOperation):
    @functools.cached_property
    def fn(self) -> t.Callable:  # type: ignore[override]
        return DecorateOnce(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class GatewayApi(AsyncApi):
    def make_operation(self, operation: AbstractOperation) -> AsyncOperation:
        return DecoratedOnceOperation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )
