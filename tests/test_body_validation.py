"""JSON request bodies: fastjsonschema may accept a body on its own, so it must never accept one that
jsonschema (as Connexion configures it: Draft 4, `nullable`, its format checker) refuses; and every
body gets exactly the outcome it got before — accepted, or a 400 with the same message."""

from __future__ import annotations

import functools
import uuid

import fastjsonschema
import pytest
from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.spec import Specification
from connexion.validators import JSONRequestBodyValidator
from fastjsonschema.draft04 import CodeGeneratorDraft04
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from gateway.fastschema import DRAFT4, FAST_KEYWORDS, SLOW_KEYWORDS, fast_path_refusal, fast_validator_for
from gateway.spec import EXT_PATH, SEED_PATH, load_document
from gateway.validation import StrictJSONBodyValidator

CHAT = "POST /v1/chat/completions"
CHAT_BODY = {"model": "goclaw:bench", "messages": [{"role": "user", "content": "hello there"}]}


def served_body_schemas() -> dict[str, dict]:
    """Each JSON requestBody schema of the served document, with refs resolved as Connexion does."""
    spec = Specification.load(load_document(SEED_PATH, EXT_PATH))
    schemas = {}
    for path, item in spec.spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            for mime, media in operation.get("requestBody", {}).get("content", {}).items():
                if "json" in mime and media.get("schema"):
                    schemas[f"{method.upper()} {path}"] = media["schema"]
    return schemas


SERVED = served_body_schemas()

FORMATS = ["ipv4", "ipv6", "email", "idn-email", "date-time", "regex", "uuid", "uri", "hostname", "made-up"]

# Schemas built to reach what the served ones do not: every format, numbers, nullable, tuples.
SYNTHETIC = {
    "formats": {
        "type": "object",
        "properties": {
            **{name: {"type": "string", "format": name} for name in FORMATS},
            "untyped": {"format": "ipv4"},  # jsonschema checks formats of non-strings too
        },
    },
    "numbers": {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True},
            "flag": {"type": "boolean"},
            "choice": {"enum": [1, 2.5, "a", None, True, [1, "x"], {"k": 0}]},
            "tags": {"type": "array", "uniqueItems": True, "maxItems": 4},
        },
    },
    "nullable": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "nullable": True, "minLength": 2},
            "kind": {"type": "string", "enum": ["a", "b"], "x-nullable": True},
            "size": {"type": "integer", "nullable": True, "maximum": 3},
            "either": {"anyOf": [{"type": "string", "nullable": True}, {"type": "integer"}]},
        },
    },
    "shapes": {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 3,
        "properties": {
            "a": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "pair": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}], "additionalItems": False},
            "more": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    },
    "combinators": {
        "allOf": [{"type": "object"}, {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}],
        "properties": {
            "a": {"type": "string", "minLength": 1},
            "b": {"oneOf": [{"type": "string", "pattern": "^[a-z]"}, {"type": "integer"}, {"type": "number"}]},
            "c": {"not": {"type": "string", "enum": ["no"]}},
        },
    },
}

FORMAT_SAMPLES = [
    "192.168.0.1", "01.2.3.4", "256.1.1.1", "::1", "1::2::3", "user@example.com", "not-an-email", "a@b",
    "2024-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01 00:00:00", "2024-01-01T00:00:00",
    str(uuid.UUID(int=1)), "not-a-uuid", "http://example.com/x", "no scheme", "host.example", "-bad-",
    "(unclosed", "[a-z]+",
]
ODD_VALUES = [
    None, True, False, 0, 1, -1, 1.0, 2.5, 1e308, float("nan"), "", "x", "***", "***\n", "abc\n",
    [], {}, ["x", "x"], [1, True], [1, 1.0], [[1], [True]], [{"a": 1}, {"a": 1.0}], {"x": 1},
]
STRING_EDGES = ["", "x", "***", "***\n", "abc\n", "a\n", "\n", " ", "a b", "A"]
odd = st.sampled_from(ODD_VALUES + FORMAT_SAMPLES)


def _strings(schema: dict, mode: str) -> st.SearchStrategy:
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    if mode == "valid":
        fits = lambda text: shortest <= len(text) <= (longest if longest is not None else len(text))  # noqa: E731
        if "pattern" in schema:
            shaped = st.from_regex(schema["pattern"]).filter(fits)
        elif "format" in schema:
            shaped = st.sampled_from(FORMAT_SAMPLES)
        else:
            shaped = st.text(min_size=shortest, max_size=min(longest, 64) if longest is not None else 64)
        edges = [text for text in STRING_EDGES if fits(text)]  # where `$` and `\Z` part, among others
        return st.one_of(shaped, st.sampled_from(edges)) if edges else shaped
    options = [st.text(max_size=min(longest + 1, 64) if longest is not None else 64)]
    if "pattern" in schema:
        options.append(st.from_regex(schema["pattern"]))
    if "format" in schema:
        options.append(st.sampled_from(FORMAT_SAMPLES))
    if longest is not None:
        options.append(st.sampled_from(["a" * longest, "a" * (longest + 1)]))
    if shortest:
        options.append(st.sampled_from(["a" * (shortest - 1), "a" * shortest]))
    return st.one_of(options)


def _numbers(schema: dict, integral: bool, mode: str) -> st.SearchStrategy:
    low, high = schema.get("minimum"), schema.get("maximum")
    if mode == "valid":
        if integral:
            return st.integers(low, high)
        return st.floats(low, high, exclude_min=bool(schema.get("exclusiveMinimum")) and low is not None,
                         exclude_max=bool(schema.get("exclusiveMaximum")) and high is not None)
    edges = [value for value in (low, high) if value is not None]
    outside = st.integers(None if low is None else int(low) - 1, None if high is None else int(high) + 1)
    options = [outside, st.sampled_from([*edges, *(float(e) for e in edges), 1.0, True, 0])]
    if not integral:
        options.append(st.floats(None if low is None else low - 1, None if high is None else high + 1,
                                 allow_nan=low is None and high is None))
    return st.one_of(options)


def _objects(schema: dict, mode: str) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    required = [name for name in schema.get("required", []) if isinstance(name, str)]
    others = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
    members = {name: instances(properties.get(name, others), mode) for name in {*properties, *required}}
    optional = {name: members[name] for name in members if name not in required}
    complete = st.fixed_dictionaries({name: members[name] for name in required}, optional=optional)
    options = [complete]
    if mode != "valid":
        options.append(st.fixed_dictionaries({}, optional={**members, "unexpected": odd}))  # missing, extra
    extra = []
    for pattern, sub in schema.get("patternProperties", {}).items():
        extra.append(st.dictionaries(st.from_regex(pattern), instances(sub, mode), max_size=2))
    if isinstance(schema.get("additionalProperties"), dict):
        extra.append(st.dictionaries(st.text(max_size=8), instances(schema["additionalProperties"], mode),
                                     max_size=2))
    merged = st.tuples(st.one_of(options), st.lists(st.one_of(extra), max_size=1) if extra else st.just([]))
    return merged.map(lambda parts: {k: v for p in parts[1] for k, v in p.items()} | parts[0])


def _arrays(schema: dict, mode: str) -> st.SearchStrategy:
    items = schema.get("items", {})
    shortest, longest = schema.get("minItems", 0), schema.get("maxItems", 4)
    if isinstance(items, list):
        prefix = st.tuples(*(instances(item, mode) for item in items)).map(list)
        if mode == "valid":
            return prefix
        return st.tuples(prefix, st.lists(odd, max_size=2)).map(lambda pair: pair[0] + pair[1])
    if mode == "valid":
        unique = {"unique_by": repr} if schema.get("uniqueItems") else {}
        return st.lists(instances(items, mode), min_size=shortest, max_size=max(min(longest, 5), shortest), **unique)
    return st.lists(instances(items, mode), max_size=longest + 1 if longest <= 8 else 5)


def _narrowed(base: dict, branch: dict) -> dict:
    """`base` with one branch of its combinator folded in (properties merged, `required` joined), so
    that generation produces objects the branch can accept. For generating only, not validating."""
    merged = {**base, **{k: v for k, v in branch.items() if k not in ("properties", "required")}}
    properties = dict(base.get("properties", {}))
    for name, sub in branch.get("properties", {}).items():
        both = isinstance(properties.get(name), dict) and isinstance(sub, dict)
        properties[name] = _narrowed(properties[name], sub) if both else sub
    required = list(dict.fromkeys([*base.get("required", []), *branch.get("required", [])]))
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


_strategies: dict[tuple[int, str], tuple[dict, st.SearchStrategy]] = {}


def instances(schema: object, mode: str) -> st.SearchStrategy:
    """Bodies for `schema`, shaped by its keywords: "valid" keeps to its constraints (mostly valid),
    "near" tries their edges, "odd" also puts an odd value at a quarter of the positions."""
    if not isinstance(schema, dict):
        return odd
    cached = _strategies.get((id(schema), mode))
    if cached is None or cached[0] is not schema:  # the schema is kept alive with its strategy
        cached = (schema, _build(schema, mode))
        _strategies[(id(schema), mode)] = cached
    return cached[1]


def _build(schema: dict, mode: str) -> st.SearchStrategy:
    if "properties" in schema:  # an object narrowed by combinators: generate from the narrowed whole
        for combinator in ("allOf", "anyOf", "oneOf"):
            branches = [branch for branch in schema.get(combinator, []) if isinstance(branch, dict)]
            if branches:
                rest = {k: v for k, v in schema.items() if k != combinator}
                if combinator == "allOf":
                    return instances(functools.reduce(_narrowed, branches, rest), mode)
                options = [instances(_narrowed(rest, branch), mode) for branch in branches]
                return st.one_of(options if mode == "valid" else [*options, instances(rest, mode)])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    shaped = []
    if "enum" in schema:
        shaped.append(st.sampled_from(schema["enum"]))
    elif "string" in types or "pattern" in schema or "format" in schema:
        shaped.append(_strings(schema, mode))
    if "integer" in types or "number" in types:
        shaped.append(_numbers(schema, "number" not in types, mode))
    if "boolean" in types:
        shaped.append(st.booleans())
    if schema.get("nullable") or schema.get("x-nullable") is True:
        shaped.append(st.none())
    if "object" in types or "properties" in schema or "required" in schema:
        shaped.append(_objects(schema, mode))
    if "array" in types or "items" in schema:
        shaped.append(_arrays(schema, mode))
    for combinator in ("allOf", "anyOf", "oneOf"):
        shaped.extend(instances(branch, mode) for branch in schema.get(combinator, []))
    if "not" in schema and mode != "valid":
        shaped.append(instances(schema["not"], mode))
    near = st.one_of(shaped) if shaped else odd
    return st.sampled_from([near, near, near, odd]).flatmap(lambda it: it) if mode == "odd" else near


def outcome(validator_cls: type, schema: dict, body: object) -> str:
    """"accepted", or the 400 message, from a body validator of the given class."""
    validator = validator_cls(schema=schema, required=True, nullable=False, encoding="utf-8", strict_validation=True)
    try:
        validator._validate(body)
    except BadRequestProblem as exc:
        return exc.detail
    return "accepted"


def fast_accepts(schema: dict, body: object) -> bool | None:
    """fastjsonschema's own verdict (None: the schema is jsonschema's alone)."""
    fast = fast_validator_for(schema)
    if fast is None:
        return None
    try:
        fast(body)
    except Exception:
        return False
    return True


def check(schema: dict, body: object) -> str:
    """The properties this file is about, for one body: returns the (unchanged) outcome."""
    sent = repr(body)
    before = outcome(JSONRequestBodyValidator, schema, body)  # Connexion's own, jsonschema only
    if fast_accepts(schema, body):
        assert Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER).is_valid(body), sent
        assert before == "accepted", (sent, before)
    assert outcome(StrictJSONBodyValidator, schema, body) == before, sent
    assert repr(body) == sent, "validation changed the body"
    return before


ALL = {**SERVED, **SYNTHETIC}


@pytest.mark.parametrize("mode", ["valid", "near", "odd"])
@pytest.mark.parametrize("name", sorted(ALL))
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=st.data())
def test_fast_path_never_accepts_what_jsonschema_refuses(name, mode, data):
    schema = ALL[name]
    check(schema, data.draw(st.deferred(lambda: instances(schema, mode)), label="body"))


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("body", ODD_VALUES + FORMAT_SAMPLES, ids=repr)
def test_odd_bodies_keep_their_outcome(name, body):
    check(ALL[name], body)


@pytest.mark.parametrize(("body", "message"), [
    (CHAT_BODY, "accepted"),
    ({**CHAT_BODY, "user": "abc\n"}, "accepted"),  # jsonschema's `$` matches before a final newline
    ({**CHAT_BODY, "max_tokens": 1.0}, "1.0 is not of type 'integer' - 'max_tokens'"),
    ({**CHAT_BODY, "max_tokens": True}, "True is not of type 'integer' - 'max_tokens'"),
    ({**CHAT_BODY, "temperature": True}, "True is not of type 'number' - 'temperature'"),
    ({**CHAT_BODY, "temperature": 2.5}, "2.5 is greater than the maximum of 2 - 'temperature'"),
    ({**CHAT_BODY, "user": None}, "None is not of type 'string' - 'user'"),
    ({**CHAT_BODY, "model": "m" * 301}, f"'{'m' * 301}' is too long - 'model'"),
    ({**CHAT_BODY, "messages": []}, "[] should be non-empty - 'messages'"),
    ({"model": "x"}, "'messages' is a required property"),
    ({**CHAT_BODY, "messages": [{"role": "robot", "content": "x"}]},
     "'robot' is not one of ['system', 'user', 'assistant'] - 'messages.0.role'"),
    ({**CHAT_BODY, "unknown": 1}, "accepted"),
])
def test_chat_bodies(body, message):
    assert check(SERVED[CHAT], body) == message


def test_channel_credentials_keep_jsonschemas_verdict_on_a_final_newline():
    """jsonschema refuses "***\\n" for `^(?!\\*\\*\\*$)` (its `$` matches before a final newline);
    fastjsonschema's `\\Z` would let it through, so that schema is jsonschema's alone."""
    schema = SERVED["POST /v1/channels/instances"]
    body = {"name": "x", "channel_type": "telegram", "agent_id": "a", "credentials": {"token": "***\n"}}
    assert fast_validator_for(schema) is None
    assert check(schema, body) == r"'***\n' does not match '^(?!\\*\\*\\*$)' - 'credentials.token'"
    assert check(schema, {**body, "credentials": {"token": "***x"}}) == "accepted"


def test_valid_chat_body_takes_the_fast_path_and_keeps_its_defaults_unfilled():
    schema = SERVED[CHAT]
    assert fast_path_refusal(schema) is None
    body = {"model": "goclaw:bench", "messages": [{"role": "user", "content": "hello there"}]}
    assert fast_accepts(schema, body) is True
    assert check(schema, body) == "accepted"
    assert body == CHAT_BODY  # no `stream: false` filled in from the schema's default


def test_valid_bodies_are_accepted_by_the_fast_path_alone():
    """The fast path is worth having: these valid bodies never reach jsonschema."""
    cases = [
        (SYNTHETIC["formats"], {"ipv4": "10.0.0.1", "email": "a@b.example", "date-time": "2024-01-01T00:00:00Z",
                                "uuid": "whatever", "uri": "not checked by Draft 4", "made-up": "x", "untyped": 5}),
        (SYNTHETIC["numbers"], {"count": 10, "ratio": 0.5, "choice": {"k": 0}, "tags": [1, True, "1"]}),
        (SYNTHETIC["shapes"], {"a": "abc", "x-1": 3, "pair": ["s", 1]}),
        (SYNTHETIC["combinators"], {"b": 1.5, "c": "yes"}),
    ]
    for schema, body in cases:
        assert fast_accepts(schema, body) is True, body
        assert check(schema, body) == "accepted"


# Each refusal rule with a body the unguarded fast path would accept although jsonschema refuses it.
MORE_LENIENT_UNGUARDED = [
    ({"type": "string", "pattern": r"^(?!\*\*\*$)"}, "***\n"),  # `$` made `\Z` inside a negative lookahead
    ({"oneOf": [{"type": "string", "nullable": True}, {"type": "null"}]}, None),  # two matches in jsonschema
    ({"not": {"type": "string", "x-nullable": True}}, None),
    ({"type": "number", "multipleOf": 0.1}, 0.3),  # Decimal division
    ({"type": "number", "multipleOf": 3}, 1e308),  # float division
]


@pytest.mark.parametrize(("schema", "body"), MORE_LENIENT_UNGUARDED, ids=repr)
def test_refused_schemas_are_those_where_fastjsonschema_is_not_just_stricter(schema, body):
    assert fast_path_refusal(schema) is not None
    assert fast_validator_for(schema) is None
    assert outcome(StrictJSONBodyValidator, schema, body) == outcome(JSONRequestBodyValidator, schema, body)
    jsonschema_accepts = Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER).is_valid(body)
    unguarded = fastjsonschema.compile({**schema, "$schema": DRAFT4}, use_default=False)
    try:
        unguarded(body)
        unguarded_accepts = True
    except fastjsonschema.JsonSchemaException:
        unguarded_accepts = False
    assert unguarded_accepts and not jsonschema_accepts


def test_fastjsonschema_is_told_draft_4():
    """Left to pick, fastjsonschema takes its newest draft, where 1.0 is an integer."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fastjsonschema.compile(schema, use_default=False)({"n": 1.0})  # the newest draft accepts
    assert fast_accepts(schema, {"n": 1.0}) is False
    assert check(schema, {"n": 1.0}) == "1.0 is not of type 'integer' - 'n'"


def test_every_jsonschema_keyword_is_checked_or_kept_off_the_fast_path():
    """A keyword jsonschema or fastjsonschema implements that no one compared keeps its schema slow."""
    assert set(Draft4RequestValidator.VALIDATORS) == FAST_KEYWORDS | SLOW_KEYWORDS.keys()
    generator_keywords = set(CodeGeneratorDraft04({})._json_keywords_to_function)
    assert generator_keywords <= FAST_KEYWORDS | SLOW_KEYWORDS.keys()


def test_jsonschema_format_checkers_pass_non_strings():
    """fastjsonschema checks a format on strings only, which is all jsonschema's Draft 4 checkers refuse."""
    checker = Draft4Validator.FORMAT_CHECKER
    for name in checker.checkers:
        for value in (0, 1.5, True, None, [], {}, ["x"], {"a": "b"}):
            assert checker.conforms(value, name), (name, value)


def test_every_served_body_schema_compiles_or_names_its_reason():
    assert fast_path_refusal(SERVED[CHAT]) is None
    for name, schema in SERVED.items():
        reason = fast_path_refusal(schema)
        assert (reason is None) == (fast_validator_for(schema) is not None), (name, reason)


def test_http_400_message_is_jsonschemas(admin):
    headers = {"X-GoClaw-User-Id": "alice"}
    refused = admin.post("/v1/chat/completions", json={**CHAT_BODY, "max_tokens": 1.0}, headers=headers)
    assert refused.status_code == 400
    assert refused.json() == {"error": "1.0 is not of type 'integer' - 'max_tokens'"}
    unknown_agent = admin.post("/v1/chat/completions", json={**CHAT_BODY, "model": "goclaw:no-such-agent"},
                               headers=headers)
    assert unknown_agent.status_code == 404, unknown_agent.text  # valid: past validation, to the handler
