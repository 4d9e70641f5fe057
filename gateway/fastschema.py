"""A fast first check of request bodies: fastjsonschema compiles a body schema to Python once;
what it accepts is valid, and anything it refuses is re-checked by jsonschema (Connexion's
validator), which gives the 400 its message. So it must never be more lenient than jsonschema as
Connexion configures it; the rules below keep it so, and schemas where that is in doubt are
jsonschema's alone."""

from __future__ import annotations

import copy
import re
import typing as t

import fastjsonschema
from connexion.json_schema import Draft4RequestValidator
from jsonschema import Draft4Validator

# Fast path for request bodies. jsonschema re-creates a validator per sub-schema while descending
# (~9% of the gateway's CPU on a small chat request); fastjsonschema compiles a schema to Python once.
# It only ever *accepts* on its own: a body it refuses is re-checked by jsonschema, which gives the
# 400 its message. So it may be stricter than jsonschema, never more lenient. Where the two differ:
#   * `nullable`/`x-nullable` (Connexion's extension): unknown to fastjsonschema, so null is refused
#     there — stricter, fine, except under `not`/`oneOf`, where a stricter branch can make the
#     whole more lenient (a branch fewer matching makes `oneOf` pass, a refused branch makes `not`
#     pass). Under those two, every branch must decide exactly as jsonschema does.
#   * `pattern`: fastjsonschema turns each unescaped `$` into `\Z` (no match before a final
#     newline). Stricter when the `$` is the pattern's last character (then a top-level anchor) and
#     not under `not`/`oneOf`; a `$` anywhere else (a lookahead, a class) may invert or break it: refused.
#   * `multipleOf`: fastjsonschema divides Decimals (0.3 is a multiple of 0.1 there, not in jsonschema)
#     and floats (1e308 "is" a multiple of 3): more lenient, refused.
#   * `uniqueItems`: NaN items (json.loads reads `NaN`) make fastjsonschema stricter: refused under
#     `not`/`oneOf`.
#   * `$ref`: Connexion has resolved the document; one left would be resolved (or fetched) by
#     fastjsonschema on its own terms: refused. `dependencies`: unused here, not checked: refused.
#   * formats: each name is checked by jsonschema's own checker (unknown names pass, as there).
#     fastjsonschema only checks strings; jsonschema's Draft 4 checkers pass every non-string.
#   * Draft 4 is forced (`$schema` on a copy): left alone, fastjsonschema takes the newest draft,
#     where 1.0 is an integer and `exclusiveMinimum` is a number.
#   * `default`: never filled in (`use_default=False`): the body must reach the handler as sent.
# Keywords both implement, checked to decide alike (on JSON values) and allowed; any other keyword
# jsonschema implements (these three, or one a later jsonschema adds) keeps its schema off the fast path:
FAST_KEYWORDS = frozenset({
    "type", "enum", "allOf", "anyOf", "oneOf", "not", "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "minItems", "maxItems", "uniqueItems", "items", "additionalItems",
    "minProperties", "maxProperties", "required", "properties", "patternProperties", "additionalProperties",
})
SLOW_KEYWORDS = {
    "$ref": "a reference left unresolved",
    "multipleOf": "fastjsonschema's multipleOf is more lenient (Decimal and float division)",
    "dependencies": "not used by the served schemas, so not checked for equivalence",
}
UNCHECKED_KEYWORDS = frozenset(Draft4RequestValidator.VALIDATORS) - FAST_KEYWORDS
DRAFT4 = "http://json-schema.org/draft-04/schema#"
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # names that fastjsonschema pastes into its generated code

_fast_validators: dict[int, tuple[dict, t.Callable[[t.Any], t.Any] | None]] = {}


def _subschemas(schema: t.Any, exact: bool = False) -> t.Iterator[tuple[t.Any, bool]]:
    """Every schema position in `schema`, itself first, each with whether it lies under `not` or
    `oneOf` (where it must decide exactly as jsonschema does, not merely as strictly)."""
    yield schema, exact
    if not isinstance(schema, dict):
        return
    for key in ("properties", "patternProperties"):
        if isinstance(schema.get(key), dict):
            for child in schema[key].values():
                yield from _subschemas(child, exact)
    for key in ("additionalProperties", "additionalItems", "items"):
        if isinstance(schema.get(key), dict):
            yield from _subschemas(schema[key], exact)
    for key in ("allOf", "anyOf", "oneOf", "items"):
        if isinstance(schema.get(key), list):
            for child in schema[key]:
                yield from _subschemas(child, exact or key == "oneOf")
    if isinstance(schema.get("not"), dict):
        yield from _subschemas(schema["not"], True)


def _refusal(node: t.Any, exact: bool) -> str | None:
    if not isinstance(node, dict):
        return "a schema that is not an object"
    unchecked = sorted(UNCHECKED_KEYWORDS & node.keys())
    if unchecked:
        return f"{unchecked[0]}: {SLOW_KEYWORDS.get(unchecked[0], 'not checked for equivalence')}"
    shapes = {"properties": dict, "patternProperties": dict, "allOf": list, "anyOf": list, "oneOf": list,
              "not": dict, "items": (dict, list), "additionalItems": (dict, bool), "additionalProperties": (dict, bool)}
    for keyword, shape in shapes.items():
        if keyword in node and not isinstance(node[keyword], shape):
            return f"{keyword} of an unexpected shape"
    if not all(PLAIN_NAME.fullmatch(name) for name in node.get("properties", {})):
        return "a property name fastjsonschema would paste into code"
    if "format" in node and not (isinstance(node["format"], str) and PLAIN_NAME.fullmatch(node["format"])):
        return "a format name fastjsonschema would paste into code"
    pattern = node.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            return "a pattern that is not a string"
        if "$" in pattern and (exact or "$" in pattern[:-1]):
            return f"pattern {pattern!r}: a `$` made `\\Z` where that is not simply stricter"
    if exact and (node.get("x-nullable") is True or node.get("nullable")):
        return "nullable under not/oneOf"
    if exact and node.get("uniqueItems"):
        return "uniqueItems under not/oneOf"
    return None


def fast_path_refusal(schema: dict) -> str | None:
    """Why `schema` is left to jsonschema alone, or None when fastjsonschema may accept for it."""
    for node, exact in _subschemas(schema):
        reason = _refusal(node, exact)
        if reason is not None:
            return reason
    return None


def compile_fast(schema: dict) -> t.Callable[[t.Any], t.Any] | None:
    """fastjsonschema's validator for a body schema, or None (refused, or it cannot compile it)."""
    if fast_path_refusal(schema) is not None:
        return None
    checker = Draft4Validator.FORMAT_CHECKER
    names = {node["format"] for node, _ in _subschemas(schema) if "format" in node}
    formats = {name: (lambda value, name=name: checker.conforms(value, name)) for name in names}
    try:
        return fastjsonschema.compile({**copy.deepcopy(schema), "$schema": DRAFT4}, formats=formats,
                                      use_default=False, detailed_exceptions=False)
    except Exception:  # a schema fastjsonschema cannot handle is jsonschema's alone
        return None


def fast_validator_for(schema: dict) -> t.Callable[[t.Any], t.Any] | None:
    """Compiled once per body schema, like `_body_validators`."""
    cached = _fast_validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, compile_fast(schema))
        _fast_validators[id(schema)] = cached
    return cached[1]
