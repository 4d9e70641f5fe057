"""The one error type. Raised anywhere; becomes `{"error": "<localised message>"}`."""

from __future__ import annotations

from gateway.i18n import translate


class ApiError(Exception):
    """An error the client should see: HTTP status + message key + arguments."""

    def __init__(self, status: int, key: str, *args: object, headers: dict[str, str] | None = None):
        super().__init__(key, *args)
        self.status = status
        self.key = key
        self.args_ = args
        self.headers = headers or {}

    def message(self, locale: str = "en") -> str:
        return translate(locale, self.key, *self.args_)

    def __str__(self) -> str:  # for logs
        return f"{self.status} {self.message()}"


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "error.invalid_request", detail)


def not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, "error.not_found", kind, ident)


def conflict(kind: str, ident: object) -> ApiError:
    return ApiError(409, "error.already_exists", kind, ident)
