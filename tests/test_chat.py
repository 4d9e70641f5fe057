"""Chat completions through the official OpenAI SDK, against the stub upstream over real HTTP."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import openai
import pytest

from tests.support.processes import TEST_TOKEN, start_gateway, wait_until


@pytest.fixture
def agent_for(admin, llm_stub):
    """Factory: a provider (OpenAI wire format, on the stub) and an agent owned by `owner`."""

    def make(owner: str = "alice", *, provider_type: str = "openai_compat", base: str = "/v1", **agent_fields) -> dict:
        suffix = uuid.uuid4().hex[:8]
        provider = admin.post("/v1/providers", json={
            "name": f"stub-{suffix}", "provider_type": provider_type, "api_base": llm_stub.url + base,
            "api_key": "sk-test-secret-123456",
        })
        assert provider.status_code == 201, provider.text
        body = {"name": f"bot-{suffix}", "provider": f"stub-{suffix}", "model": "gpt-4o-mini",
                "system_prompt": "You are a terse test bot.", **agent_fields}
        agent = admin.post("/v1/agents", json=body, headers={"X-GoClaw-User-Id": owner})
        assert agent.status_code == 201, agent.text
        return {"agent": agent.json(), "provider": provider.json(), "model": f"goclaw:{body['name']}"}

    return make


def sdk(gateway, user: str = "alice", token: str = TEST_TOKEN) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=token, max_retries=0, default_headers={"X-GoClaw-User-Id": user},
    )


def test_non_streaming_completion_is_a_valid_openai_response(gateway, agent_for, llm_stub):
    setup = agent_for()
    llm_stub.reset()
    reply = sdk(gateway).chat.completions.create(
        model=setup["model"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "echo: hello"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    sent = llm_stub.requests()[-1]["body"]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0]["role"] == "system"
    assert "You are a terse test bot." in sent["messages"][0]["content"]
    assert "Be brief." in str(sent["messages"])


def test_streaming_relays_deltas_as_chunks(gateway, agent_for, llm_stub):
    setup = agent_for()
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "chunks": ["one ", "two ", "three"]})
    stream = sdk(gateway).chat.completions.create(
        model=setup["model"], messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3
    assert chunks[-1].usage is not None


def test_every_call_is_traced_with_an_llm_span(gateway, agent_for, admin):
    setup = agent_for()
    sdk(gateway).chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": "trace me"}])
    agent_id = setup["agent"]["id"]

    def traced() -> bool:
        return admin.get("/v1/traces", params={"agent_id": agent_id}).json()["total"] == 1

    assert wait_until(traced, timeout=5)
    trace = admin.get("/v1/traces", params={"agent_id": agent_id}).json()["traces"][0]
    assert trace["status"] == "completed" and trace["llm_call_count"] == 1
    detail = admin.get(f"/v1/traces/{trace['id']}").json()
    (span,) = detail["spans"]
    assert span["span_type"] == "llm_call" and span["model"] == "gpt-4o-mini"
    assert span["input_tokens"] == trace["total_input_tokens"] > 0
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]


def test_usage_and_costs_equal_what_the_traces_say(gateway, agent_for, admin):
    setup = agent_for(owner="carol")
    client = sdk(gateway, user="carol")
    for text in ("a", "bb", "ccc"):
        client.chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": text}])
    agent_id = setup["agent"]["id"]
    assert wait_until(lambda: admin.get("/v1/traces", params={"agent_id": agent_id}).json()["total"] == 3, timeout=5)
    traces = admin.get("/v1/traces", params={"agent_id": agent_id}).json()["traces"]
    summary = admin.get("/v1/usage/summary", params={"agent_id": agent_id}).json()["current"]
    assert summary["requests"] == 3
    assert summary["input_tokens"] == sum(t["total_input_tokens"] for t in traces)
    assert summary["output_tokens"] == sum(t["total_output_tokens"] for t in traces)
    assert summary["cost"] == pytest.approx(sum(t["total_cost"] for t in traces))
    assert summary["cost"] > 0  # gpt-4o-mini has a default price
    series = admin.get("/v1/usage/timeseries", params={"period": "1h", "agent_id": agent_id}).json()
    assert len(series["points"]) == 12
    assert sum(p["request_count"] for p in series["points"]) == 3
    day = admin.get("/v1/usage/timeseries", params={"period": "24h", "agent_id": agent_id}).json()
    assert len(day["points"]) == 24 and sum(p["input_tokens"] for p in day["points"]) == summary["input_tokens"]
    costs = admin.get("/v1/costs/summary", params={"agent_id": agent_id}).json()
    assert costs["total_cost"] == pytest.approx(summary["cost"])


def test_usage_rollups_add_up_when_concurrent_requests_share_a_write_batch(gateway, agent_for, admin):
    """Rollup rows of requests written in one batch are summed before the upsert: nothing is lost."""
    setup = agent_for(owner="erin")
    client = sdk(gateway, user="erin")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: client.chat.completions.create(
            model=setup["model"], messages=[{"role": "user", "content": "x" * n}]), range(1, 17)))
    agent_id = setup["agent"]["id"]
    assert wait_until(lambda: admin.get("/v1/traces", params={"agent_id": agent_id, "limit": 50}).json()["total"] == 16,
                      timeout=5)
    traces = admin.get("/v1/traces", params={"agent_id": agent_id, "limit": 50}).json()["traces"]
    summary = admin.get("/v1/usage/summary", params={"agent_id": agent_id}).json()["current"]
    assert summary["requests"] == 16
    assert summary["input_tokens"] == sum(t["total_input_tokens"] for t in traces)
    assert summary["output_tokens"] == sum(t["total_output_tokens"] for t in traces)
    assert summary["cost"] == pytest.approx(sum(t["total_cost"] for t in traces))


def test_a_reply_the_database_cannot_store_as_text_is_still_traced_and_kept(gateway, agent_for, llm_stub, admin):
    """PostgreSQL text cannot hold U+0000: a model reply with one is stored with U+FFFD instead,
    and its trace, span and transcript are written like any other (the batch used to drop them)."""
    setup = agent_for(owner="frank")
    llm_stub.script({"wire": "openai", "text": "nul\u0000byte"})
    reply = sdk(gateway, user="frank").chat.completions.create(
        model=setup["model"], messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "nul\u0000byte"  # the caller gets the reply as sent
    agent_id = setup["agent"]["id"]
    assert wait_until(lambda: admin.get("/v1/traces", params={"agent_id": agent_id}).json()["total"] == 1, timeout=5)
    trace = admin.get("/v1/traces", params={"agent_id": agent_id}).json()["traces"][0]
    detail = admin.get(f"/v1/traces/{trace['id']}").json()
    assert trace["output_preview"] == "nul\ufffdbyte" and len(detail["spans"]) == 1
    assert [m["content"] for m in detail["messages"]] == ["hi", "nul\ufffdbyte"]


def test_usage_of_other_tenants_is_invisible(gateway, agent_for, client_for, make_key):
    setup = agent_for(owner="dave")
    sdk(gateway, user="dave").chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": "x"}])
    key, _ = make_key("operator.read")
    eve = client_for(key, user="eve")
    assert eve.get("/v1/traces", params={"agent_id": setup["agent"]["id"]}).json()["total"] == 0
    assert eve.get("/v1/usage/summary").json()["current"]["requests"] == 0


def test_a_user_cannot_chat_with_another_users_private_agent(gateway, agent_for, make_key):
    setup = agent_for(owner="alice")
    key, _ = make_key("operator.write")  # an operator, not an admin: tenancy applies
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, user="mallory", token=key).chat.completions.create(
            model=setup["model"], messages=[{"role": "user", "content": "hi"}],
        )
    reply = sdk(gateway, user="alice", token=key).chat.completions.create(
        model=setup["model"], messages=[{"role": "user", "content": "hi"}],
    )
    assert reply.choices[0].message.content == "echo: hi"


def test_unknown_agent_is_404_and_empty_messages_400(gateway):
    client = sdk(gateway)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="goclaw:no-such-agent", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="goclaw:no-such-agent", messages=[])


def test_upstream_failure_is_502_and_is_traced(gateway, agent_for, llm_stub, admin):
    setup = agent_for()
    llm_stub.reset()
    llm_stub.script([{"wire": "openai", "status": 500, "message": "boom"}] * 3)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert "boom" in caught.value.response.json()["error"]
    agent_id = setup["agent"]["id"]
    errors = {"agent_id": agent_id, "status": "error"}
    assert wait_until(lambda: admin.get("/v1/traces", params=errors).json()["total"] == 1)


def test_retry_after_429_then_success(gateway, agent_for, llm_stub):
    setup = agent_for()
    llm_stub.reset()
    llm_stub.script([{"wire": "openai", "status": 429, "retry_after": "0", "message": "slow down"}])
    reply = sdk(gateway).chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": "again"}])
    assert reply.choices[0].message.content == "echo: again"


def test_disabled_provider_is_a_clear_409(gateway, agent_for, admin):
    setup = agent_for()
    assert admin.put(f"/v1/providers/{setup['provider']['id']}", json={"enabled": False}).status_code == 200
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 409


def test_anthropic_and_gemini_agents_answer_through_the_same_endpoint(gateway, agent_for):
    for provider_type, base in (("anthropic_native", "/anthropic/v1"), ("gemini_native", "/gemini/v1beta")):
        setup = agent_for(provider_type=provider_type, base=base)
        client = sdk(gateway)
        reply = client.chat.completions.create(model=setup["model"], messages=[{"role": "user", "content": "yo"}])
        assert reply.choices[0].message.content == "echo: yo"
        chunks = list(client.chat.completions.create(
            model=setup["model"], messages=[{"role": "user", "content": "yo"}], stream=True,
        ))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: yo"


def test_client_disconnect_cancels_the_upstream_stream(gateway, agent_for, llm_stub, admin):
    setup = agent_for()
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "chunks": ["start ", "never"], "hang_after": 2})
    body = {"model": setup["model"], "messages": [{"role": "user", "content": "hang"}], "stream": True}
    headers = {"Authorization": f"Bearer {TEST_TOKEN}", "X-GoClaw-User-Id": "alice"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=10) as response:
        for line in response.iter_lines():
            if "start" in line:
                break  # leave mid-stream
    assert wait_until(lambda: llm_stub.stats()["open_streams"] == 0, timeout=5)
    agent_id = setup["agent"]["id"]
    assert wait_until(
        lambda: admin.get("/v1/traces", params={"agent_id": agent_id, "status": "cancelled"}).json()["total"] == 1,
        timeout=5,
    )


def test_wake_runs_the_agent_and_continues_its_session(client_for, agent_for, llm_stub):
    setup = agent_for(owner="alice")
    alice = client_for(TEST_TOKEN, user="alice")
    first = alice.post(f"/v1/agents/{setup['agent']['id']}/wake", json={"message": "ping"})
    assert first.status_code == 200, first.text
    assert first.json()["content"] == "echo: ping"
    llm_stub.reset()
    alice.post(f"/v1/agents/{setup['agent']['name']}/wake", json={"message": "again"})
    sent = llm_stub.requests()[-1]["body"]["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == ["ping", "echo: ping", "again"]


def test_rate_limit_per_credential_answers_429_with_retry_after(database, tmp_path, llm_stub):
    gw = start_gateway(database.dsn, tmp_path / "limited", GOCLAW_RATE_LIMIT_RPM="1", GOCLAW_RATE_LIMIT_BURST="1")
    try:
        body = {"model": "goclaw:nothing-here", "messages": [{"role": "user", "content": "x"}]}
        headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
        first = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
        second = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
        assert first.status_code == 404
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
        assert "error" in second.json()
    finally:
        gw.stop()


def test_upstream_timeout_is_504(gateway, admin, llm_stub):
    suffix = uuid.uuid4().hex[:8]
    created = admin.post("/v1/providers", json={
        "name": f"slow-{suffix}", "provider_type": "openai_compat", "api_base": llm_stub.openai_base,
        "api_key": "sk-slow", "settings": {"timeout_seconds": 1}})
    assert created.status_code == 201, created.text
    admin.post("/v1/agents", headers={"X-GoClaw-User-Id": "alice"},
               json={"name": f"slowbot-{suffix}", "provider": f"slow-{suffix}", "model": "gpt-4o-mini"})
    llm_stub.reset()
    llm_stub.script({"wire": "openai", "delay": 5})
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model=f"goclaw:slowbot-{suffix}",
                                             messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 504
    llm_stub.reset()
