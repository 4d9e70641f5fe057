"""The served contract: seed ⊆ served document, health, docs, route table, resolver convention."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from gateway.spec import ExtensionConflict, function_name, is_subset, merge_add_only, module_name

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seeds" / "openapi_spec.json"


def test_repo_spec_is_byte_identical_to_the_seed():
    if SEED.exists():
        assert (ROOT / "openapi_spec.json").read_bytes() == SEED.read_bytes()


def test_seed_is_a_subset_of_the_served_document(gateway):
    served = httpx.get(gateway.url + "/v1/openapi.json").json()
    seed = json.loads((ROOT / "openapi_spec.json").read_text())
    assert is_subset(seed, served)
    assert len([1 for item in seed["paths"].values() for m in item if m != "parameters"]) == 60


def test_every_operation_taking_a_body_documents_the_body_limit_and_deadline(gateway):
    """413 (over GOCLAW_MAX_BODY_BYTES) and 408 (trickled past GOCLAW_BODY_TIMEOUT_MS) come from
    the HTTP layer in front of every handler, so every operation with a request body lists both."""
    served = httpx.get(gateway.url + "/v1/openapi.json").json()
    with_body = [(method, path, op) for path, item in served["paths"].items()
                 for method, op in item.items() if isinstance(op, dict) and "requestBody" in op]
    assert len(with_body) >= 20
    for method, path, op in with_body:
        assert {"408", "413"} <= set(op["responses"]), f"{method.upper()} {path}"


def test_extension_may_only_add():
    assert merge_add_only({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    params = [{"name": "limit", "in": "query", "schema": {"type": "integer"}}]
    merged = merge_add_only(params, [{"name": "limit", "in": "query", "schema": {"maximum": 5}}])
    assert merged == [{"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 5}}]
    for change in ({"a": {"b": 2}}, {"a": 1}):
        try:
            merge_add_only({"a": {"b": 1}}, change)
        except ExtensionConflict:
            continue
        raise AssertionError(f"{change} was accepted")


def test_health_reports_database_and_uptime(client_for):
    response = client_for().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["mode"] == "managed"
    assert body["uptime_ms"] >= 0


def test_docs_render_swagger_ui(gateway):
    response = httpx.get(gateway.url + "/docs/")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_resolver_naming_convention():
    assert module_name("API Keys") == "api_keys"
    assert module_name("Built-in Tools") == "built_in_tools"
    assert function_name("delete", "/v1/api-keys/{id}") == "delete_api_keys_by_id"
    assert function_name("post", "/v1/agents/{agentID}/kg/traverse") == "post_agents_by_agentid_kg_traverse"
    assert function_name("get", "/health") == "get_health"


def test_implemented_operations_are_counted_from_the_live_route_table(admin):
    response = admin.get("/v1/system/routes")
    assert response.status_code == 200
    table = response.json()
    seed = json.loads((ROOT / "openapi_spec.json").read_text())
    seed_ops = {(m.upper(), p) for p, item in seed["paths"].items() for m in item}
    implemented = [r for r in table["routes"] if r["implemented"] and (r["method"], r["path"]) in seed_ops]
    print(f"\nimplemented {len(implemented)}/{len(seed_ops)}")
    assert len(implemented) >= 5


def test_operator_adds_a_path_and_a_function_and_it_is_served(database, tmp_path):
    """Copy the spec, add one path, write one function: served without touching anything else."""
    from tests.support.processes import TEST_TOKEN, start_gateway

    spec = json.loads((ROOT / "openapi_spec.json").read_text())
    spec["paths"]["/v1/greetings/{name}"] = {
        "get": {
            "tags": ["Greetings"],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "A greeting"}},
        }
    }
    spec["paths"]["/v1/greetings"] = {"post": {"tags": ["Greetings"], "responses": {"200": {"description": "Later"}}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "greetings.py").write_text(
        "async def get_greetings_by_name(name: str):\n    return {'hello': name}\n"
    )
    gw = start_gateway(database.dsn, tmp_path / "gw", GOCLAW_SPEC=str(tmp_path / "spec.json"), PYTHONPATH=str(tmp_path))
    try:
        response = httpx.get(gw.url + "/v1/greetings/ada", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        assert response.status_code == 200
        assert response.json() == {"hello": "ada"}
        assert httpx.get(gw.url + "/v1/greetings/ada").status_code == 401  # the global security applies
        pending = httpx.post(gw.url + "/v1/greetings", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        assert pending.status_code == 501  # described, no function yet
        assert pending.json() == {"error": "not implemented yet: POST /v1/greetings"}
    finally:
        gw.stop()
