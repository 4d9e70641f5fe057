"""Providers: CRUD with the API key sealed at rest and masked on the wire, the SSRF guard on
api_base, model listing and verification against the stub upstream, and the adapter cache."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.processes import TEST_ENCRYPTION_KEY, free_port

UNKNOWN = "00000000-0000-0000-0000-000000000000"
SECRET = "sk-live-4f1c2b9d8e7a6b5c"


def unique(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stub(llm_stub):
    llm_stub.reset()
    yield llm_stub
    llm_stub.reset()


def create(admin, **body) -> dict:
    body.setdefault("name", unique())
    body.setdefault("provider_type", "openai_compat")
    response = admin.post("/v1/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def stored_key(database, provider_id: str) -> str | None:
    with database.connect() as conn:
        return conn.execute("SELECT api_key FROM llm_providers WHERE id = %s", (provider_id,)).fetchone()[0]


def sent_keys(stub) -> list[str]:
    return [r["headers"].get("authorization", "") for r in stub.requests()]


def test_create_seals_the_key_and_every_answer_masks_it(admin, database, stub):
    provider = create(admin, display_name="Stub", api_base=stub.openai_base, api_key=SECRET)
    assert provider["api_key"] == "***" and provider["has_api_key"] is True
    assert provider["enabled"] is True and provider["settings"] == {}
    assert provider["api_base"] == stub.openai_base and provider["display_name"] == "Stub"
    column = stored_key(database, provider["id"])
    assert column.startswith("aes-gcm:") and SECRET not in column
    for shown in (admin.get(f"/v1/providers/{provider['id']}").json(),
                  *admin.get("/v1/providers").json()["providers"]):
        assert shown["api_key"] in ("***", "") and SECRET not in str(shown)
    logs = admin.get("/v1/activity", params={"entity_id": provider["id"]}).json()["logs"]
    assert [log["action"] for log in logs] == ["provider.created"] and SECRET not in str(logs)
    # ... and the upstream gets the real key
    assert admin.get(f"/v1/providers/{provider['id']}/models").status_code == 200
    assert sent_keys(stub) == [f"Bearer {SECRET}"]


def test_without_a_key_the_mask_is_empty(admin):
    provider = create(admin, provider_type="ollama", api_base="")
    assert provider["api_key"] == "" and provider["has_api_key"] is False and provider["api_base"] == ""


def test_an_empty_or_null_api_base_means_the_type_default(admin, stub):
    provider = create(admin, api_base=stub.openai_base)
    url = f"/v1/providers/{provider['id']}"
    assert admin.put(url, json={"api_base": None}).json()["api_base"] == ""
    assert admin.put(url, json={"api_base": stub.openai_base}).json()["api_base"] == stub.openai_base
    assert admin.put(url, json={"api_base": ""}).json()["api_base"] == ""


def test_update_keeps_the_key_for_the_mask_or_no_key_replaces_or_clears_it(admin, database, stub):
    provider = create(admin, api_base=stub.openai_base, api_key=SECRET)
    url = f"/v1/providers/{provider['id']}"
    sealed = stored_key(database, provider["id"])
    assert admin.put(url, json={"display_name": "renamed"}).json()["has_api_key"] is True
    echoed = admin.put(url, json={"api_key": "***", "enabled": True}).json()
    assert echoed["api_key"] == "***" and stored_key(database, provider["id"]) == sealed
    admin.get(url + "/models")
    admin.put(url, json={"api_key": "sk-new-0000"})
    admin.get(url + "/models")
    assert sent_keys(stub) == [f"Bearer {SECRET}", "Bearer sk-new-0000"]
    cleared = admin.put(url, json={"api_key": ""}).json()
    assert cleared["api_key"] == "" and cleared["has_api_key"] is False and stored_key(database, provider["id"]) is None


def test_a_provider_is_addressed_by_uuid_and_anything_else_is_400(admin):
    provider = create(admin)
    url = f"/v1/providers/{provider['id']}"
    assert admin.get(url).json() == provider
    assert admin.put(url, json={"enabled": False}).json()["enabled"] is False
    for response in (
        admin.get(f"/v1/providers/{provider['name']}"),
        admin.put(f"/v1/providers/{provider['name']}", json={"enabled": True}),
        admin.delete(f"/v1/providers/{provider['name']}"),
        admin.get(f"/v1/providers/{provider['name']}/models"),
        admin.post(f"/v1/providers/{provider['name']}/verify", json={}),
    ):
        assert response.status_code == 400
        assert response.json() == {"error": f"invalid path parameter 'id': '{provider['name']}' is not a 'uuid'"}
    assert admin.delete(url).json() == {"status": "deleted", "id": provider["id"], "name": provider["name"]}


def test_list_is_ordered_by_name(admin):
    create(admin, name="zz-" + uuid.uuid4().hex[:6])
    create(admin, name="aa-" + uuid.uuid4().hex[:6])
    names = [p["name"] for p in admin.get("/v1/providers").json()["providers"]]
    assert names == sorted(names)


def test_duplicate_name_is_409_on_create_and_on_rename(admin):
    first, second = create(admin), create(admin)
    response = admin.post("/v1/providers", json={"name": first["name"], "provider_type": "groq"})
    assert response.status_code == 409
    assert response.json() == {"error": f"provider already exists: {first['name']}"}
    assert admin.put(f"/v1/providers/{second['id']}", json={"name": first["name"]}).status_code == 409


@pytest.mark.parametrize("ref", [UNKNOWN, "01a221b8-307f-7f28-9397-5d82a824d18e"])
def test_unknown_provider_is_404_on_every_verb(admin, ref):
    assert admin.get(f"/v1/providers/{ref}").status_code == 404
    assert admin.put(f"/v1/providers/{ref}", json={"enabled": False}).status_code == 404
    assert admin.delete(f"/v1/providers/{ref}").status_code == 404
    assert admin.get(f"/v1/providers/{ref}/models").status_code == 404
    response = admin.post(f"/v1/providers/{ref}/verify", json={"model": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": f"provider not found: {ref}"}


@pytest.mark.parametrize(
    "body",
    [
        {"provider_type": "openai_compat"},
        {"name": "ok"},
        {"name": "Bad Name", "provider_type": "openai_compat"},
        {"name": "x" * 51, "provider_type": "openai_compat"},
        {"name": "ok", "provider_type": "openai"},
        {"name": "ok", "provider_type": "openai_compat", "unknown": 1},
        {"name": "ok", "provider_type": "openai_compat", "id": UNKNOWN},
        {"name": "ok", "provider_type": "openai_compat", "api_base": "ftp://example.com"},
        {"name": "ok", "provider_type": "openai_compat", "api_base": "not a url"},
        {"name": "ok", "provider_type": "openai_compat", "api_base": "http://host:99999/v1"},
        {"name": "ok", "provider_type": "openai_compat", "settings": []},
        {"name": "ok", "provider_type": "openai_compat", "settings": {"default_model": 3}},
        {"name": "ok", "provider_type": "openai_compat", "enabled": "yes"},
        {"name": "ok", "provider_type": "openai_compat", "api_key": "sk-with space"},
        {"name": "ok", "provider_type": "openai_compat", "api_key": "sk-\u00e9"},
    ],
)
def test_invalid_input_is_400_and_creates_nothing(admin, body):
    before = len(admin.get("/v1/providers").json()["providers"])
    response = admin.post("/v1/providers", json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)
    assert len(admin.get("/v1/providers").json()["providers"]) == before


@pytest.mark.parametrize(
    "api_base",
    ["http://169.254.169.254/", "http://10.0.0.7/v1", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0:80/"],
)
def test_api_base_on_a_private_or_metadata_address_is_400(admin, api_base):
    body = {"name": unique(), "provider_type": "openai_compat", "api_base": api_base}
    response = admin.post("/v1/providers", json=body)
    assert response.status_code == 400
    assert "private or reserved" in response.json()["error"]
    provider = create(admin)
    assert admin.put(f"/v1/providers/{provider['id']}", json={"api_base": api_base}).status_code == 400
    assert admin.get(f"/v1/providers/{provider['id']}").json()["api_base"] == ""


def test_an_unresolvable_host_is_accepted_and_fails_when_called(admin):
    provider = create(admin, api_base="https://llm.invalid/v1", api_key="k")
    response = admin.get(f"/v1/providers/{provider['id']}/models")
    assert response.status_code == 502
    assert admin.post(f"/v1/providers/{provider['id']}/verify", json={"model": "m"}).json()["valid"] is False


@pytest.mark.parametrize(
    ("provider_type", "base", "expected"),
    [
        ("openai_compat", "openai_base", [("stub-gpt", "stub-gpt"), ("stub-gpt-mini", "stub-gpt-mini")]),
        ("anthropic_native", "anthropic_base",
         [("claude-stub-1", "Claude Stub 1"), ("claude-stub-2", "Claude Stub 2")]),
        ("gemini_native", "gemini_base", [("gemini-stub", "Gemini Stub")]),
    ],
)
def test_models_come_from_the_upstream(admin, stub, provider_type, base, expected):
    provider = create(admin, provider_type=provider_type, api_base=getattr(stub, base), api_key="k")
    response = admin.get(f"/v1/providers/{provider['id']}/models")
    assert response.status_code == 200
    models = [(m["id"], m["name"]) for m in response.json()["models"]]
    assert models[: len(expected)] == expected


def test_an_upstream_refusal_is_a_502_with_its_reason(admin, stub):
    provider = create(admin, api_base=stub.openai_base, api_key="wrong")
    stub.script({"status": 401, "message": "Incorrect API key provided"})
    response = admin.get(f"/v1/providers/{provider['id']}/models")
    assert response.status_code == 502
    assert "Incorrect API key provided" in response.json()["error"] and "401" in response.json()["error"]


def test_an_upstream_that_is_down_is_a_502(admin):
    provider = create(admin, api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="k")
    response = admin.get(f"/v1/providers/{provider['id']}/models")
    assert response.status_code == 502
    assert response.json()["error"].startswith("upstream provider error")


def test_verify_answers_valid_for_a_working_key_and_model(admin, stub):
    provider = create(admin, api_base=stub.openai_base, api_key=SECRET)
    response = admin.post(f"/v1/providers/{provider['id']}/verify", json={"model": "stub-gpt"})
    assert response.status_code == 200
    assert response.json() == {"valid": True, "error": None, "model": "stub-gpt"}
    chat = [r for r in stub.requests() if r["path"].endswith("/chat/completions")][-1]
    assert chat["body"]["model"] == "stub-gpt" and chat["headers"]["authorization"] == f"Bearer {SECRET}"


def test_verify_reports_an_upstream_refusal_as_invalid_with_the_reason(admin, stub):
    provider = create(admin, provider_type="anthropic_native", api_base=stub.anthropic_base, api_key="bad")
    stub.script({"status": 401, "message": "invalid x-api-key"})
    response = admin.post(f"/v1/providers/{provider['id']}/verify", json={"model": "claude-stub-1"})
    assert response.status_code == 200
    assert response.json() == {"valid": False, "error": "invalid x-api-key", "model": "claude-stub-1"}


def test_verify_without_a_model_uses_the_default_model_or_the_first_listed(admin, stub):
    listed = create(admin, api_base=stub.openai_base, api_key="k")
    assert admin.post(f"/v1/providers/{listed['id']}/verify", json={}).json() == {
        "valid": True, "error": None, "model": "stub-gpt",
    }
    assert admin.post(f"/v1/providers/{listed['id']}/verify").json()["model"] == "stub-gpt"
    configured = create(admin, api_base=stub.openai_base, api_key="k", settings={"default_model": "stub-gpt-mini"})
    assert configured["default_model"] == "stub-gpt-mini"
    assert admin.post(f"/v1/providers/{configured['id']}/verify", json={}).json()["model"] == "stub-gpt-mini"


def test_verify_of_an_unreachable_upstream_is_invalid_not_an_error(admin):
    provider = create(admin, api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="k")
    body = admin.post(f"/v1/providers/{provider['id']}/verify", json={"model": "m"}).json()
    assert body["valid"] is False and "network error" in body["error"]


def test_verify_rejects_unknown_fields(admin):
    provider = create(admin)
    assert admin.post(f"/v1/providers/{provider['id']}/verify", json={"model": "m", "x": 1}).status_code == 400


def test_a_provider_in_use_cannot_be_deleted_and_a_rename_follows_into_agents(admin, client_for, make_key):
    key, _ = make_key("operator.write")
    alice = client_for(key, user="alice")
    provider = create(admin)
    agent = alice.post("/v1/agents", json={"name": unique("a"), "provider": provider["name"]}).json()
    response = admin.delete(f"/v1/providers/{provider['id']}")
    assert response.status_code == 409
    assert "used by 1 agent" in response.json()["error"]
    new_name = unique("renamed")
    assert admin.put(f"/v1/providers/{provider['id']}", json={"name": new_name}).status_code == 200
    assert alice.get(f"/v1/agents/{agent['id']}").json()["provider"] == new_name
    alice.delete(f"/v1/agents/{agent['id']}")
    assert admin.delete(f"/v1/providers/{provider['id']}").status_code == 200
    assert admin.get(f"/v1/providers/{provider['id']}").status_code == 404
    logs = admin.get("/v1/activity", params={"entity_id": provider["id"]}).json()["logs"]
    assert [log["action"] for log in logs] == ["provider.deleted", "provider.updated", "provider.created"]


def test_viewers_may_read_but_not_write(client_for, make_key, admin):
    provider = create(admin)
    key, _ = make_key("operator.read")
    viewer = client_for(key)
    assert viewer.get(f"/v1/providers/{provider['id']}").status_code == 200
    assert viewer.post("/v1/providers", json={"name": unique(), "provider_type": "groq"}).status_code == 403
    assert viewer.put(f"/v1/providers/{provider['id']}", json={"enabled": False}).status_code == 403
    assert viewer.post(f"/v1/providers/{provider['id']}/verify", json={}).status_code == 403
    assert viewer.delete(f"/v1/providers/{provider['id']}").status_code == 403


# -- get_adapter, in this process, against the same database and bus -----------------------------


def test_get_adapter_caches_and_any_process_change_invalidates_it(admin, database, stub, monkeypatch):
    import db
    import llm
    from db import bus
    from domain import providers
    from gateway import state
    from gateway.errors import ApiError
    from gateway.settings import load_settings
    from tests.support.processes import wait_until

    monkeypatch.setenv("GOCLAW_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")  # as the gateway has it
    created = create(admin, api_base=stub.openai_base, api_key=SECRET)
    name = created["name"]

    previous = state.settings

    async def scenario():
        state.configure(load_settings({"GOCLAW_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY}))
        state.http = llm.create_http_client()
        await db.connect(database.dsn, min_size=1, max_size=2)
        bus.start(database.dsn)
        try:
            await asyncio.wait_for(bus.connected.wait(), 10)
            adapter, row = await providers.get_adapter(name)
            assert "api_key" not in row or row["api_key"] == "***"
            assert row["name"] == name and row["has_api_key"] is True
            assert adapter.api_key == SECRET and adapter.base_url == stub.openai_base
            assert (await providers.get_adapter(name))[0] is adapter  # cached

            # a change made by the gateway process reaches this one over the bus
            await asyncio.to_thread(admin.put, f"/v1/providers/{created['id']}", json={"api_key": "sk-rotated"})
            assert await asyncio.to_thread(wait_until, lambda: not providers._adapters, 5)
            rotated, _ = await providers.get_adapter(name)
            assert rotated is not adapter and rotated.api_key == "sk-rotated"

            await asyncio.to_thread(admin.put, f"/v1/providers/{created['id']}", json={"enabled": False})
            assert await asyncio.to_thread(wait_until, lambda: not providers._adapters, 5)
            with pytest.raises(ApiError) as disabled:
                await providers.get_adapter(name)
            assert disabled.value.status == 409 and "disabled" in disabled.value.message()
            with pytest.raises(ApiError) as missing:
                await providers.get_adapter("no-such-provider")
            assert missing.value.status == 404
        finally:
            await bus.stop()
            await db.disconnect()
            await llm.close_http_client(state.http)
            state.http = None

    try:
        asyncio.run(scenario())
    finally:
        state.configure(previous)
