"""Memory: documents are chunked and indexed, search is hybrid (full-text + vectors) or full-text
only, scores are 0..1, and one user's personal memory never reaches another user."""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support.processes import start_gateway, wait_until

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "memory_corpus"
QUERIES = json.loads((DATA / "memory_queries.json").read_text())
UNKNOWN = "00000000-0000-0000-0000-000000000000"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stub(llm_stub):
    llm_stub.reset()
    yield llm_stub
    llm_stub.reset()


@pytest.fixture
def provider(admin, stub) -> str:
    """An OpenAI-compatible provider on the stub (deterministic hash embeddings); its name."""
    name = unique("emb")
    body = {"name": name, "provider_type": "openai_compat", "api_base": stub.openai_base, "api_key": "sk-test"}
    assert admin.post("/v1/providers", json=body).status_code == 201
    return name


@pytest.fixture
def tenant(client_for, make_key):
    """Factory: a non-admin operator client acting as the given user."""
    key, _ = make_key("operator.read", "operator.write", name="memory-test")
    return lambda user_id: client_for(key, user=user_id)


@pytest.fixture
def make_agent(database):
    """Factory: an agent owned by `owner` (optionally shared with other users); returns its row."""

    def make(client, provider: str = "", memory_config: dict | None = None, shared_with: tuple[str, ...] = ()):
        body = {"name": unique("mem"), "provider": provider}
        if memory_config is not None:
            body["memory_config"] = memory_config
        response = client.post("/v1/agents", json=body)
        assert response.status_code == 201, response.text
        agent = response.json()
        with database.connect() as conn:
            for user in shared_with:
                conn.execute(
                    "INSERT INTO agent_shares (agent_id, user_id, granted_by) VALUES (%s, %s, %s)",
                    (agent["id"], user, agent["owner_id"]),
                )
        return agent

    return make


def doc_url(agent: dict, path: str, kind: str = "documents", ref: str = "id") -> str:
    """Slashes inside the document path may be sent raw or %2F-encoded; the validating test client
    only matches single-segment path parameters, so tests encode them."""
    return f"/v1/agents/{agent[ref]}/memory/{kind}/{quote(path, safe='')}"


def put(client, agent: dict, path: str, content: str, shared: bool = False):
    return client.put(doc_url(agent, path), json={"content": content, "shared": shared})


def load_corpus(client, agent: dict) -> None:
    for file in sorted(CORPUS.rglob("*.md")):
        response = put(client, agent, str(file.relative_to(CORPUS)), file.read_text(), shared=True)
        assert response.status_code == 201, response.text


def search(client, agent: dict, query: str, **extra):
    return client.post(f"/v1/agents/{agent['id']}/memory/search", json={"query": query, **extra})


def paths(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["path"] for r in response.json()["results"]]


# -- documents and chunks -----------------------------------------------------------------------


def test_a_document_is_stored_chunked_and_rewritten_only_when_it_changes(tenant, make_agent):
    alice = tenant("alice")
    agent = make_agent(alice)
    content = (CORPUS / "work" / "project-apollo.md").read_text()
    created = put(alice, agent, "memory/apollo.md", content)
    assert created.status_code == 201
    body = created.json()
    assert body["created"] is True and body["changed"] is True and body["mode"] == "fulltext"
    assert body["scope"] == "personal" and body["user_id"] == "alice" and body["path"] == "memory/apollo.md"
    assert body["hash"] == hashlib.sha256(content.encode()).hexdigest() and body["size"] == len(content)
    assert body["chunks"] >= 2 and body["embedded_chunks"] == 0

    read = alice.get(doc_url(agent, "memory/apollo.md", ref="agent_key")).json()
    assert read["content"] == content and read["id"] == body["id"]

    again = put(alice, agent, "memory/apollo.md", content)
    assert again.status_code == 200 and again.json()["changed"] is False
    edited = put(alice, agent, "memory/apollo.md", content + "\nA new closing line.\n")
    assert edited.status_code == 200 and edited.json()["changed"] is True and edited.json()["id"] == body["id"]


def test_chunks_follow_paragraphs_keep_line_numbers_and_overlap_inside_long_paragraphs(tenant, make_agent):
    alice = tenant("alice")
    agent = make_agent(alice)
    sentences = [f"Sentence {i} tells a short story about the number {i}." for i in range(60)]
    content = "# Title\n\nFirst paragraph.\n\n" + " ".join(sentences) + "\n\nLast paragraph.\n"
    assert put(alice, agent, "long.md", content).status_code == 201
    listed = alice.get(doc_url(agent, "long.md", "chunks")).json()
    chunks = listed["chunks"]
    assert listed["count"] == len(chunks) >= 3
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(len(c["text"]) <= 1000 for c in chunks)
    assert chunks[0]["start_line"] == 1 and chunks[-1]["end_line"] == 7
    assert chunks[-1]["text"].endswith("Last paragraph.")
    # the long paragraph is cut between sentences and consecutive pieces share a sentence
    middle = [c["text"] for c in chunks if "Sentence" in c["text"]]
    assert len(middle) >= 2
    for before, after in itertools.pairwise(middle):
        first_sentence = after.split(". ")[0] + "."
        assert first_sentence in before
    assert all(c["dims"] is None for c in chunks)


def test_unknown_document_is_404_and_delete_removes_it_with_its_chunks(tenant, make_agent, database):
    alice = tenant("alice")
    agent = make_agent(alice)
    assert alice.get(doc_url(agent, "missing.md")).status_code == 404
    assert alice.delete(doc_url(agent, "missing.md")).status_code == 404
    doc = put(alice, agent, "todo.md", "Buy milk.\n\nCall the plumber about the leaking tap.").json()
    deleted = alice.delete(doc_url(agent, "todo.md"))
    assert deleted.status_code == 200 and deleted.json() == {"status": "deleted", "id": doc["id"], "path": "todo.md"}
    assert alice.get(doc_url(agent, "todo.md")).status_code == 404
    assert alice.get(doc_url(agent, "todo.md", "chunks")).status_code == 404
    with database.connect() as conn:
        left = conn.execute("SELECT count(*) FROM memory_chunks WHERE document_id = %s", (doc["id"],)).fetchone()[0]
    assert left == 0
    actions = [log["action"] for log in alice.get("/v1/activity", params={"entity_id": doc["id"]}).json()["logs"]]
    assert actions == ["memory.document_deleted", "memory.document_saved"]


def test_slashes_in_a_document_path_may_be_sent_raw(tenant, make_agent):
    alice = tenant("alice")
    agent = make_agent(alice)
    alice.validate = False  # the validating client only matches single-segment path parameters
    url = f"/v1/agents/{agent['id']}/memory/documents/memory/2025-01-31.md"
    assert alice.put(url, json={"content": "Raw slashes work."}).status_code == 201
    assert alice.get(url).json()["path"] == "memory/2025-01-31.md"
    assert alice.get(f"/v1/agents/{agent['id']}/memory/chunks/memory/2025-01-31.md").json()["count"] == 1
    assert alice.patch(url).status_code == 405


@pytest.mark.parametrize(
    "path",
    ["noextension", ".hidden.md", "notes/.secret.md", "a b.md", "x" * 498 + ".md", "dir/"],
)
def test_bad_document_paths_are_400(tenant, make_agent, path):
    alice = tenant("alice")
    agent = make_agent(alice)
    assert put(alice, agent, path, "text").status_code == 400


def test_bad_document_bodies_are_400(tenant, make_agent):
    alice = tenant("alice")
    agent = make_agent(alice)
    url = doc_url(agent, "a.md")
    assert alice.put(url, json={"content": "x" * 65_537}).status_code == 400
    assert alice.put(url, json={"content": 5}).status_code == 400
    assert alice.put(url, json={}).status_code == 400
    assert alice.put(url, json={"content": "x", "colour": "red"}).status_code == 400


# -- full-text search ---------------------------------------------------------------------------


@pytest.fixture
def fulltext_agent(tenant, make_agent):
    """An agent without an embedding provider, with the shipped corpus as shared memory."""
    alice = tenant("alice")
    agent = make_agent(alice)
    load_corpus(alice, agent)
    return alice, agent


def test_without_a_provider_search_is_fulltext_and_ranks_the_relevant_document_first(fulltext_agent):
    alice, agent = fulltext_agent
    misses = []
    for case in QUERIES:
        response = search(alice, agent, case["query"])
        assert response.status_code == 200 and response.json()["mode"] == "fulltext"
        found = paths(response)
        if not found or found[0] != case["expect"]:
            misses.append((case["query"], found[:3]))
    assert misses == []


def test_scores_are_between_0_and_1_best_first_and_limit_is_honoured(fulltext_agent):
    alice, agent = fulltext_agent
    body = search(alice, agent, "budget deadline", limit=3).json()
    scores = [r["score"] for r in body["results"]]
    assert body["count"] == len(scores) == 3
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    first = body["results"][0]
    assert first["source"] == "memory" and first["scope"] == "shared" and first["snippet"]
    assert 1 <= first["start_line"] <= first["end_line"]
    assert len(search(alice, agent, "budget", max_results=2).json()["results"]) == 2
    high = search(alice, agent, "budget deadline", min_score=0.99).json()
    assert all(r["score"] >= 0.99 for r in high["results"])


def test_stemming_matches_other_word_forms(fulltext_agent):
    alice, agent = fulltext_agent
    # "deadlines"/"switched" are stored as "deadline"/"switching"
    assert paths(search(alice, agent, "deadlines"))[0] in ("work/project-apollo.md", "finance/taxes.md")
    assert paths(search(alice, agent, "switched customers"))[0] == "work/project-apollo.md"


def test_a_query_without_searchable_words_finds_nothing(fulltext_agent):
    alice, agent = fulltext_agent
    body = search(alice, agent, "?!").json()
    assert body == {"results": [], "count": 0, "mode": "fulltext"}


# -- hybrid search ------------------------------------------------------------------------------


def test_with_a_provider_chunks_are_embedded_and_search_is_hybrid(tenant, make_agent, provider, stub, database):
    alice = tenant("alice")
    agent = make_agent(alice, provider, {"embedding_model": "text-embedding-stub", "dimensions": 256})
    load_corpus(alice, agent)
    calls = [r for r in stub.requests() if r["path"] == "/v1/embeddings"]
    assert calls and all(r["body"]["model"] == "text-embedding-stub" and r["body"]["dimensions"] == 256 for r in calls)
    chunks = alice.get(doc_url(agent, "recipes/sourdough.md", "chunks"), params={"shared": True})
    assert {c["dims"] for c in chunks.json()["chunks"]} == {256}
    with database.connect() as conn:
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'memory_vectors_256'")}
    assert "memory_vectors_256_hnsw_idx" in indexes

    firsts = []
    for case in QUERIES:
        body = search(alice, agent, case["query"]).json()
        assert body["mode"] == "hybrid" and all(0 <= r["score"] <= 1 for r in body["results"])
        found = [r["path"] for r in body["results"]]
        assert case["expect"] in found[:3], (case["query"], found[:3])
        firsts.append(found[0] == case["expect"])
    # the stub's vectors are hash noise; score fusion keeps the text evidence in charge
    assert sum(firsts) >= len(QUERIES) - 2


def test_agents_with_different_dimensions_share_the_table(tenant, make_agent, provider, database):
    alice = tenant("alice")
    small = make_agent(alice, provider, {"dimensions": 64})
    default = make_agent(alice, provider)  # the stub's default size: 384
    for agent in (small, default):
        assert put(alice, agent, "garden.md", (CORPUS / "home" / "garden.md").read_text()).json()["mode"] == "hybrid"
        body = search(alice, agent, "compost heap").json()
        assert body["mode"] == "hybrid" and body["results"][0]["path"] == "garden.md"
    with database.connect() as conn:
        dims = dict(conn.execute(
            "SELECT agent_id::text, max(dims) FROM memory_chunks WHERE agent_id = ANY(%s) GROUP BY agent_id",
            ([small["id"], default["id"]],)).fetchall())
        stored = [conn.execute(f"SELECT count(*) FROM memory_vectors_{d} WHERE agent_id = %s", (a["id"],)).fetchone()[0]
                  for d, a in ((64, small), (384, default))]
    assert dims == {small["id"]: 64, default["id"]: 384}
    assert all(n > 0 for n in stored)


def test_unchanged_chunks_come_from_the_embedding_cache(tenant, make_agent, provider, stub):
    alice = tenant("alice")
    agent = make_agent(alice, provider)
    content = (CORPUS / "travel" / "japan-trip.md").read_text()
    assert put(alice, agent, "japan.md", content).json()["embedded_chunks"] >= 2
    embedded = len([r for r in stub.requests() if r["path"] == "/v1/embeddings"])
    assert put(alice, agent, "copy-of-japan.md", content).json()["mode"] == "hybrid"
    reindexed = alice.post(f"/v1/agents/{agent['id']}/memory/reindex")
    assert reindexed.status_code == 200
    assert reindexed.json() == {"documents": 2, "chunks": 4, "embedded_chunks": 4, "mode": "hybrid"}
    assert len([r for r in stub.requests() if r["path"] == "/v1/embeddings"]) == embedded


def test_a_failing_provider_degrades_to_fulltext_and_reindex_recovers(tenant, make_agent, provider, stub):
    alice = tenant("alice")
    agent = make_agent(alice, provider)
    stub.script([{"status": 400, "message": "model overloaded"}] * 2)
    saved = put(alice, agent, "wifi.md", (CORPUS / "home" / "wifi-setup.md").read_text()).json()
    assert saved["mode"] == "fulltext" and saved["embedded_chunks"] == 0
    body = search(alice, agent, "guest network password").json()
    assert body["mode"] == "fulltext" and body["results"][0]["path"] == "wifi.md"
    reindexed = alice.post(f"/v1/agents/{agent['id']}/memory/reindex").json()
    assert reindexed["mode"] == "hybrid" and reindexed["embedded_chunks"] == reindexed["chunks"] > 0
    assert search(alice, agent, "guest network password").json()["mode"] == "hybrid"


def test_an_agent_can_switch_embeddings_off(tenant, make_agent, provider, stub):
    alice = tenant("alice")
    agent = make_agent(alice, provider, {"embeddings": False})
    assert put(alice, agent, "a.md", "The heating engineer comes in autumn.").json()["mode"] == "fulltext"
    assert search(alice, agent, "heating").json()["mode"] == "fulltext"
    assert not [r for r in stub.requests() if r["path"] == "/v1/embeddings"]


# -- tenancy ------------------------------------------------------------------------------------


@pytest.fixture
def shared_agent(tenant, make_agent):
    """An agent owned by alice and shared with bob, with a personal note for each and a shared one."""
    alice, bob = tenant("alice"), tenant("bob")
    agent = make_agent(alice, shared_with=("bob",))
    secret = "The zanzibarquux vault code is under the blue vase."
    assert put(alice, agent, "notes/secret.md", secret).status_code == 201
    assert put(bob, agent, "notes/bob.md", "Bob keeps the spare qwertyplum key in the shed.").status_code == 201
    team = "Shared: the zanzibarquux project kicks off on Monday."
    assert put(alice, agent, "team.md", team, shared=True).status_code == 201
    return alice, bob, agent


def test_a_personal_document_is_invisible_to_other_users_by_path_search_and_listing(shared_agent, tenant):
    alice, bob, agent = shared_agent
    assert bob.get(doc_url(agent, "notes/secret.md")).status_code == 404
    assert bob.get(doc_url(agent, "notes/secret.md", "chunks")).status_code == 404
    assert bob.delete(doc_url(agent, "notes/secret.md")).status_code == 404
    assert paths(search(bob, agent, "zanzibarquux vault")) == ["team.md"]
    assert paths(search(alice, agent, "qwertyplum")) == []
    docs = bob.get("/v1/memory/documents", params={"agent_id": agent["id"]}).json()
    listed = {(d["path"], d["user_id"]) for d in docs}
    assert listed == {("notes/bob.md", "bob"), ("team.md", "")}
    assert bob.get("/v1/memory/documents", params={"user_id": "alice"}).json() == []
    carol = tenant("carol")  # cannot see the agent at all
    assert carol.get(doc_url(agent, "team.md")).status_code == 404
    assert search(carol, agent, "zanzibarquux").status_code == 404
    assert carol.get("/v1/memory/documents", params={"agent_id": agent["id"]}).status_code == 404
    assert [d for d in carol.get("/v1/memory/documents").json() if d["agent_id"] == agent["id"]] == []


def test_the_users_own_notes_rank_above_shared_ones(shared_agent):
    alice, _, agent = shared_agent
    results = search(alice, agent, "zanzibarquux").json()["results"]
    assert [(r["path"], r["scope"]) for r in results] == [("notes/secret.md", "personal"), ("team.md", "shared")]
    assert results[0]["score"] > results[1]["score"]


def test_only_the_owner_writes_or_deletes_shared_memory(shared_agent, admin):
    alice, bob, agent = shared_agent
    assert put(bob, agent, "team.md", "overwritten", shared=True).status_code == 403
    assert bob.delete(doc_url(agent, "team.md"), params={"shared": True}).status_code == 403
    assert bob.get(doc_url(agent, "team.md")).json()["scope"] == "shared"
    # a personal copy of the same path shadows the shared one for its owner only
    assert put(bob, agent, "team.md", "Bob's own version.").status_code == 201
    assert bob.get(doc_url(agent, "team.md")).json()["content"] == "Bob's own version."
    assert alice.get(doc_url(agent, "team.md")).json()["scope"] == "shared"
    assert admin.get("/v1/memory/documents", params={"agent_id": agent["id"], "user_id": "bob"}).status_code == 200
    docs = admin.get("/v1/memory/documents", params={"agent_id": agent["id"]}).json()
    every = {(d["path"], d["user_id"]) for d in docs}
    assert {("notes/secret.md", "alice"), ("notes/bob.md", "bob"), ("team.md", "bob"), ("team.md", "")} <= every


def test_document_listing_filters_and_paginates(shared_agent):
    alice, _, agent = shared_agent
    newest = alice.get("/v1/memory/documents", params={"agent_id": agent["agent_key"]}).json()
    assert [d["path"] for d in newest] == ["team.md", "notes/secret.md"]  # newest first

    def listed(**params) -> list[str]:
        return [d["path"] for d in alice.get("/v1/memory/documents", params={"agent_id": agent["id"], **params}).json()]

    assert listed(path_prefix="notes/") == ["notes/secret.md"]
    assert listed(scope="shared") == ["team.md"]
    second = alice.get("/v1/memory/documents", params={"agent_id": agent["id"], "limit": 1, "offset": 1}).json()
    assert [d["path"] for d in second] == ["notes/secret.md"]
    assert alice.get("/v1/memory/documents", params={"limit": 0}).status_code == 400
    assert alice.get("/v1/memory/documents", params={"limit": 201}).status_code == 400
    assert alice.get("/v1/memory/documents", params={"agent_id": UNKNOWN}).status_code == 404


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"query": ""},
        {"query": "   "},
        {"query": "\x1e"},  # whitespace to Python, not to ECMA regexes: the documented pattern says "blank" for both
        {"query": "\ufeff\u3000"},
        {"query": "x" * 2001},
        {"query": "ok", "limit": 0},
        {"query": "ok", "limit": 51},
        {"query": "ok", "max_results": 100},
        {"query": "ok", "min_score": 1.5},
        {"query": "ok", "unknown": True},
        {"limit": 5},
    ],
)
def test_bad_search_input_is_400(tenant, make_agent, body):
    alice = tenant("alice")
    agent = make_agent(alice)
    response = alice.post(f"/v1/agents/{agent['id']}/memory/search", json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)


def test_a_2000_character_query_is_accepted(fulltext_agent):
    alice, agent = fulltext_agent
    assert search(alice, agent, ("sourdough starter " * 200)[:2000]).status_code == 200


@pytest.mark.parametrize("ref", [UNKNOWN, "no-such-agent"])
def test_unknown_agent_is_404(tenant, ref):
    alice = tenant("alice")
    assert alice.post(f"/v1/agents/{ref}/memory/search", json={"query": "x"}).status_code == 404
    assert alice.put(doc_url({"id": ref}, "a.md"), json={"content": "x"}).status_code == 404
    assert alice.get(doc_url({"id": ref}, "a.md")).status_code == 404
    assert alice.post(f"/v1/agents/{ref}/memory/reindex").status_code == 404


def test_embedding_cache_entries_past_the_retention_are_pruned(database, tmp_path):
    """GOCLAW_EMBEDDING_CACHE_DAYS bounds the cache: a process sweeps at startup (then hourly)."""
    insert = ("INSERT INTO embedding_cache (provider, model, dims_requested, hash, embedding, created_at) "
              "VALUES ('retention', 'm', 0, %s, '[1,2,3]', now() - make_interval(days => %s))")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(insert, ("a" * 64, 8))
        conn.execute(insert, ("b" * 64, 2))

    def cached() -> set[str]:
        with psycopg.connect(database.dsn) as conn:
            return {r[0] for r in conn.execute("SELECT hash FROM embedding_cache WHERE provider = 'retention'")}

    gateway = start_gateway(database.dsn, tmp_path, GOCLAW_EMBEDDING_CACHE_DAYS="7")
    try:
        assert wait_until(lambda: cached() == {"b" * 64}, timeout=10)
    finally:
        gateway.stop()
