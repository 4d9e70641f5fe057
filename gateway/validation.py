"""Connexion's request validators, with messages that name the field and no 500 on bad bytes."""

from __future__ import annotations

import copy
import json
import re
import typing as t
import uuid

from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.utils import is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    JSONRequestBodyValidator,
    MultiPartFormDataValidator,
    ParameterValidator,
)
from jsonschema import Draft4Validator, ValidationError
from starlette.formparsers import MultiPartException

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


REPLACEMENT = "\ufffd"


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
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


def replace_nul(value: t.Any) -> t.Any:
    """PostgreSQL text cannot hold U+0000, and UTF-8 cannot hold a lone surrogate (JSON's
    `\\ud800`), so both become U+FFFD (documented in README)."""
    if isinstance(value, str):
        return UNSTORABLE.sub(REPLACEMENT, value) if UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        return {replace_nul(k): replace_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_nul(v) for v in value]
    return value


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

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope) -> t.Any:
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        try:
            body = json.loads(raw.decode(self._encoding))
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="invalid JSON: body is not valid UTF-8") from None
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
