"""Connexion's request validators, with messages that name the field and no 500 on bad bytes,
built once per operation rather than per request, and a JSON body parsed once: the validated
body is handed to the handler call (`gateway.operations`) under PARSED_BODY in the scope's
extensions, instead of being re-serialised for a second parse."""

from __future__ import annotations

import copy
import json
import typing as t
import uuid

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.operations import AbstractOperation
from connexion.utils import is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    JSONRequestBodyValidator,
    MultiPartFormDataValidator,
    ParameterValidator,
)
from jsonschema import Draft4Validator, ValidationError
from starlette.formparsers import MultiPartException
from starlette.types import Receive, Scope, Send

from db.text import replace_nul
from gateway.fastschema import fast_validator_for

PARSED_BODY = "goclaw.parsed_body"  # scope["extensions"] key: (body schema, body as validated)

_param_validators: dict[int, tuple[dict, Draft4Validator]] = {}
_body_validators: dict[int, tuple[dict, Draft4Validator]] = {}

# Draft 4's checker knows no "uuid"; parameters declared `format: uuid` are checked like the rest.
FORMATS = copy.deepcopy(Draft4Validator.FORMAT_CHECKER)


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or str(uuid.UUID(value)) == value.lower()


def _validator_for(schema: dict) -> Draft4Validator:
    """One compiled validator per parameter schema (Connexion deep-copies and recompiles per call)."""
    cached = _param_validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, Draft4Validator(schema, format_checker=FORMATS))
        _param_validators[id(schema)] = cached
    return cached[1]


MAX_JSON_DEPTH = 100  # deeper documents are a 400: nothing legitimate nests further, and recursion must not 500


def too_deep(value: t.Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects nest more than `limit` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


class NamedParameterValidator(ParameterValidator):
    @staticmethod
    def validate_parameter(parameter_type, value, param, param_name=None):
        if is_nullable(param) and is_null(value):
            return None
        if value is not None:
            try:
                _validator_for(param.get("schema", param)).validate(value)
            except ValidationError as exc:
                return f"invalid {parameter_type} parameter '{param['name']}': {exc.message}"
            return None
        if param.get("required"):
            return f"missing {parameter_type} parameter '{param['name']}'"
        return None


class StrictJSONBodyValidator(JSONRequestBodyValidator):
    MUTABLE_VALIDATION = True  # the handler receives the body as parsed here (NULs replaced)

    @property
    def _validator(self):
        """Compiled once per body schema (Connexion builds a new validator per request)."""
        cached = _body_validators.get(id(self._schema))
        if cached is None or cached[0] is not self._schema:
            cached = (self._schema, Draft4RequestValidator(self._schema, format_checker=Draft4Validator.FORMAT_CHECKER))
            _body_validators[id(self._schema)] = cached
        return cached[1]

    def _validate(self, body: t.Any) -> dict | None:
        """fastjsonschema first: what it accepts is valid (it is never more lenient than jsonschema
        here, see `fast_path_refusal`). A refusal, or any error, goes to Connexion's jsonschema
        check, so a 400 names the field exactly as before; a null body always does."""
        fast = fast_validator_for(self._schema)
        if fast is not None and body is not None:
            try:
                fast(body)
            except Exception:  # refused (or failed): jsonschema decides, with today's message
                pass
            else:
                return None
        return super()._validate(body)

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        """Read, parse and validate the body once; the handler call takes it from the scope. The
        original bytes are replayed for anything downstream that reads the body itself."""
        chunks = []
        more_body = True
        while more_body:
            message = await receive()
            chunks.append(message.get("body", b""))
            more_body = message.get("more_body", False)
        raw = b"".join(chunks)
        if raw:
            body = self.decode(raw)
        else:
            body = copy.deepcopy(self._schema.get("default"))
            if body is None and self._required:
                raise BadRequestProblem("RequestBody is required")
        if not (body is None and self._nullable):
            self._validate(body)
        scope.setdefault("extensions", {})[PARSED_BODY] = (self._schema, body)
        replay = iter([{"type": "http.request", "body": raw, "more_body": False}])

        async def receive_again() -> t.MutableMapping[str, t.Any]:
            return next(replay, None) or await receive()

        return receive_again, scope

    def decode(self, raw: bytes) -> t.Any:
        try:
            body = json.loads(raw.decode(self._encoding))
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="invalid JSON: body is not valid UTF-8") from None
        except LookupError:
            raise BadRequestProblem(detail=f"unknown charset {self._encoding!r}") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise BadRequestProblem(detail=f"invalid JSON: {exc}") from None
        if too_deep(body):
            raise BadRequestProblem(detail=f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        return replace_nul(body)


class UploadFormValidator(MultiPartFormDataValidator):
    """Connexion validates a file part as the placeholder "", so a documented `minLength` on a
    `format: binary` field would refuse every upload; the placeholder is given that length instead
    and the handler checks the real bytes (an empty file is its 400). A malformed multipart body
    is a 400, not the 500 Starlette's parser error would become."""

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope) -> dict:
        try:
            return await super()._parse(stream, scope)
        except MultiPartException as exc:
            raise BadRequestProblem(detail=f"invalid multipart body: {exc.message}") from None

    def _validate(self, body: t.Any) -> dict | None:
        if isinstance(body, dict):
            for name, schema in self._schema.get("properties", {}).items():
                if schema.get("format") in ("binary", "base64") and body.get(name) == "":
                    body = {**body, name: "\x00" * int(schema.get("minLength", 0))}
        return super()._validate(body)


def validator_map() -> dict:
    body = type(VALIDATOR_MAP["body"])(
        {**VALIDATOR_MAP["body"], "*/*json": StrictJSONBodyValidator, "multipart/form-data": UploadFormValidator}
    )
    return {"parameter": NamedParameterValidator, "body": body}


class ValidateOnce(RequestValidationOperation):
    """Connexion's request validation of one operation, with the URI parser, the parameter
    validator, the body validators and the accepted media types built once (Connexion builds
    them per request); parameters are not checked when the operation has none and the request
    no query string (nothing could fail)."""

    def __init__(self, next_app: t.Any, *, operation: AbstractOperation, strict_validation: bool = False,
                 validator_map: dict | None = None) -> None:
        super().__init__(next_app, operation=operation, strict_validation=strict_validation,
                         validator_map=validator_map)
        parameters = operation.parameters
        self._parameters = self._validator_map["parameter"](
            parameters, uri_parser=operation.uri_parser_class(parameters, operation.body_definition()),
            strict_validation=strict_validation, security_query_params=self.security_query_params,
        )
        self._bodies: dict[tuple[str, str], t.Any] = {}
        self._has_parameters = bool(parameters)  # without any, only a query string can be wrong
        self._consumes = MediaTypeDict([(c.lower(), None) for c in operation.consumes])
        self._accepted: set[str] = set()  # mime types already found acceptable

    def _body_validator(self, mime_type: str, encoding: str) -> t.Any:
        key = (mime_type, encoding)
        validator = self._bodies.get(key)
        if validator is None:
            validator = self._new_body_validator(mime_type, encoding)
            if len(self._bodies) < 8:  # the header is the client's: keep only a few variants
                self._bodies[key] = validator
        return validator or None

    def _new_body_validator(self, mime_type: str, encoding: str) -> t.Any:
        operation = self._operation
        schema = operation.body_schema(mime_type)
        validator_cls = self._validator_map["body"].get(mime_type) if schema else None
        if validator_cls is None:
            return False  # nothing to validate (cached as "none")
        return validator_cls(
            schema=schema,
            required=operation.request_body.get("required", False),
            nullable=is_nullable(operation.body_definition(mime_type)),
            encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=operation.uri_parser_class(operation.parameters, operation.body_definition()),
        )

    def validate_mime_type(self, mime_type: str) -> None:
        """Connexion's check (media ranges included) against a table built once."""
        if mime_type in self._accepted or not self._operation.consumes:
            return
        if mime_type.lower() not in self._consumes:
            raise UnsupportedMediaTypeProblem(
                detail=f"Invalid Content-type ({mime_type}), expected {self._operation.consumes}"
            )
        if len(self._accepted) < 8:
            self._accepted.add(mime_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._has_parameters or scope.get("query_string"):
            self._parameters.validate(scope)
        mime_type, encoding = self.extract_content_type(scope["headers"])
        self.validate_mime_type(mime_type)
        validator = self._body_validator(mime_type, encoding)
        if validator is not None:
            receive, scope = await validator.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)


class ValidateOnceApi(RequestValidationAPI):
    def make_operation(self, operation: AbstractOperation) -> ValidateOnce:
        return ValidateOnce(self.next_app, operation=operation, strict_validation=self.strict_validation,
                            validator_map=self.validator_map)


class RequestValidation(RequestValidationMiddleware):
    """Connexion's RequestValidationMiddleware over ValidateOnce operations."""

    api_cls = ValidateOnceApi
