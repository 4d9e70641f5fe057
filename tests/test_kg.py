"""Knowledge graph: entities upserted by (scope, name, type), ranked full-text search without
trigrams, relations, breadth-first traversal (cycle-safe, bounded, both directions), tenancy."""

from __future__ import annotations

import uuid

import pytest

UNKNOWN = "00000000-0000-0000-0000-000000000000"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tenant(client_for, make_key):
    key, _ = make_key("operator.read", "operator.write", name="kg-test")
    return lambda user_id: client_for(key, user=user_id)


@pytest.fixture
def graph(tenant, database):
    """An agent owned by alice and shared with bob; returns (alice, bob, agent, base url)."""
    alice, bob = tenant("alice"), tenant("bob")
    response = alice.post("/v1/agents", json={"name": unique("kg")})
    assert response.status_code == 201, response.text
    agent = response.json()
    with database.connect() as conn:
        conn.execute("INSERT INTO agent_shares (agent_id, user_id, granted_by) VALUES (%s, 'bob', 'alice')",
                     (agent["id"],))
    return alice, bob, agent, f"/v1/agents/{agent['id']}/kg"


def entity(client, base: str, name: str, entity_type: str = "person", **body) -> dict:
    response = client.post(f"{base}/entities", json={"name": name, "entity_type": entity_type, **body})
    assert response.status_code == 200, response.text
    return response.json()["entity"]


def relate(client, base: str, source: dict, relation_type: str, target: dict, **body):
    return client.post(f"{base}/relations", json={
        "source_entity_id": source["id"], "relation_type": relation_type, "target_entity_id": target["id"], **body})


def traverse(client, base: str, start: dict, **body):
    return client.post(f"{base}/traverse", json={"entity_id": start["id"], **body})


# -- entities -----------------------------------------------------------------------------------


def test_upsert_creates_then_updates_the_same_entity_by_name_and_type(graph):
    alice, _, agent, base = graph
    first = alice.post(f"{base}/entities", json={
        "name": "Marta Silva", "entity_type": "Person", "description": "Leads the backend work",
        "properties": {"team": "billing"}, "external_id": "marta-silva"}).json()
    assert first["status"] == "ok" and first["created"] is True
    created = first["entity"]
    assert created["entity_type"] == "person" and created["scope"] == "personal" and created["user_id"] == "alice"
    assert created["agent_id"] == agent["id"] and created["confidence"] == 1.0

    second = alice.post(f"{base}/entities", json={
        "name": "marta silva", "entity_type": "person", "properties": {"role": "lead"}, "confidence": 0.8}).json()
    assert second["created"] is False
    updated = second["entity"]
    assert updated["id"] == created["id"] and updated["name"] == "marta silva"
    assert updated["description"] == "Leads the backend work" and updated["external_id"] == "marta-silva"
    assert updated["properties"] == {"team": "billing", "role": "lead"} and updated["confidence"] == 0.8

    other_type = entity(alice, base, "Marta Silva", "project")
    assert other_type["id"] != created["id"]
    actions = [log["action"] for log in alice.get("/v1/activity", params={"entity_id": created["id"]}).json()["logs"]]
    assert actions == ["kg.entity_updated", "kg.entity_created"]


def test_search_is_ranked_prefix_full_text_over_name_type_and_description(graph):
    alice, _, _, base = graph
    smith = entity(alice, base, "Alice Smith", description="Runs the data migration")
    jones = entity(alice, base, "Alice Jones", description="Finance sign-off")
    apollo = entity(alice, base, "Apollo", "project", description="Billing pipeline rewrite led by Alice Smith")
    entity(alice, base, "Kafka", "concept", description="Event streaming")

    def names(**params):
        response = alice.get(f"{base}/entities", params=params)
        assert response.status_code == 200, response.text
        return [e["name"] for e in response.json()]

    assert names(q="alice smith")[0] == "Alice Smith"  # both words in the name beat one
    assert set(names(q="ali")) == {"Alice Smith", "Alice Jones", "Apollo"}  # prefix match, no trigrams
    assert names(q="ali")[-1] == "Apollo"  # a name hit outranks a description hit
    assert names(q="apollo") == ["Apollo"]  # exact name first
    assert names(q="migration") == ["Alice Smith"]
    assert names(q="alice", type="project") == ["Apollo"]
    assert names(q="nobody") == []
    assert names(q="*** ???")[:1] == ["Kafka"]  # no words: newest first, like no query
    scored = alice.get(f"{base}/entities", params={"q": "alice"}).json()
    assert all(0 < e["score"] for e in scored)
    assert {smith["id"], jones["id"], apollo["id"]} <= {e["id"] for e in scored}


def test_listing_is_newest_first_and_paginates(graph):
    alice, _, _, base = graph
    made = [entity(alice, base, f"Entity {i}", "concept") for i in range(5)]
    page = alice.get(f"{base}/entities", params={"limit": 2, "offset": 1}).json()
    assert [e["id"] for e in page] == [made[3]["id"], made[2]["id"]]
    assert [e["id"] for e in alice.get(f"{base}/entities", params={"type": "concept"}).json()][:1] == [made[4]["id"]]
    assert alice.get(f"{base}/entities", params={"limit": 0}).status_code == 400
    assert alice.get(f"{base}/entities", params={"limit": 201}).status_code == 400
    assert alice.get(f"{base}/entities", params={"offset": -1}).status_code == 400


def test_get_shows_relations_and_delete_cascades_them(graph):
    alice, _, _, base = graph
    marta = entity(alice, base, "Marta")
    apollo = entity(alice, base, "Apollo", "project")
    relation = relate(alice, base, marta, "works_on", apollo, properties={"since": "2024"})
    assert relation.status_code == 200 and relation.json()["created"] is True
    again = relate(alice, base, marta, "works_on", apollo, confidence=0.5).json()
    assert again["created"] is False and again["relation"]["properties"] == {"since": "2024"}
    assert again["relation"]["confidence"] == 0.5

    shown = alice.get(f"{base}/entities/{apollo['id']}").json()
    assert [(r["direction"], r["relation_type"], r["other"]["name"]) for r in shown["relations"]] == [
        ("in", "works_on", "Marta")]
    deleted = alice.delete(f"{base}/entities/{marta['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"status": "deleted", "id": marta["id"]}
    assert alice.get(f"{base}/entities/{marta['id']}").status_code == 404
    assert alice.get(f"{base}/entities/{apollo['id']}").json()["relations"] == []
    assert alice.delete(f"{base}/entities/{marta['id']}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"entity_type": "person"},
        {"name": "", "entity_type": "person"},
        {"name": "   ", "entity_type": "person"},
        {"name": "\x1c\x85", "entity_type": "person"},
        {"name": "x" * 501, "entity_type": "person"},
        {"name": "X", "entity_type": "two words"},
        {"name": "X", "entity_type": ""},
        {"name": "X", "entity_type": "person", "confidence": 1.5},
        {"name": "X", "entity_type": "person", "properties": ["a"]},
        {"name": "X", "entity_type": "person", "colour": "red"},
    ],
)
def test_bad_entity_input_is_400(graph, body):
    alice, _, _, base = graph
    response = alice.post(f"{base}/entities", json=body)
    assert response.status_code == 400, response.text


def test_relations_need_visible_entities(graph):
    alice, bob, _, base = graph
    marta = entity(alice, base, "Marta")
    bobs = entity(bob, base, "Bob's dentist")
    assert relate(alice, base, marta, "knows", {"id": UNKNOWN}).status_code == 409
    assert relate(alice, base, marta, "knows", bobs).status_code == 409
    assert relate(bob, base, bobs, "knows", marta).status_code == 409
    assert relate(alice, base, marta, "two words", marta).status_code == 400
    assert alice.post(f"{base}/relations", json={"source_entity_id": "nope", "relation_type": "x",
                                                 "target_entity_id": marta["id"]}).status_code == 400


# -- traversal ----------------------------------------------------------------------------------


@pytest.fixture
def chain(graph):
    """a → b → c → d, c → a (a cycle), e → a (incoming), plus an unrelated f."""
    alice, bob, _, base = graph
    nodes = {name: entity(alice, base, name.upper(), "concept") for name in "abcdef"}
    for source, target in ("ab", "bc", "cd", "ca", "ea"):
        assert relate(alice, base, nodes[source], "next", nodes[target]).status_code == 200
    return alice, bob, base, nodes


def depths(response) -> dict[str, int]:
    assert response.status_code == 200, response.text
    return {n["name"]: n["depth"] for n in response.json()["nodes"]}


def test_traversal_follows_outgoing_edges_breadth_first_and_survives_cycles(chain):
    alice, _, base, n = chain
    assert depths(traverse(alice, base, n["a"], direction="out", max_depth=1)) == {"A": 0, "B": 1}
    assert depths(traverse(alice, base, n["a"], direction="out", max_depth=3)) == {"A": 0, "B": 1, "C": 2, "D": 3}
    body = traverse(alice, base, n["a"], direction="out", max_depth=3).json()
    assert body["root"] == n["a"]["id"] and body["truncated"] is False and body["max_depth"] == 3
    edges = {(e["source_entity_id"], e["target_entity_id"]): e["depth"] for e in body["edges"]}
    ids = {v["id"]: k for k, v in n.items()}
    assert {(ids[s], ids[t]): d for (s, t), d in edges.items()} == {
        ("a", "b"): 1, ("b", "c"): 2, ("c", "d"): 3, ("c", "a"): 2}


def test_traversal_can_follow_incoming_or_both_directions(chain):
    alice, _, base, n = chain
    assert depths(traverse(alice, base, n["a"], direction="in", max_depth=1)) == {"A": 0, "C": 1, "E": 1}
    assert depths(traverse(alice, base, n["a"], max_depth=2)) == {"A": 0, "B": 1, "C": 1, "E": 1, "D": 2}
    assert "F" not in depths(traverse(alice, base, n["a"], max_depth=3))


def test_traversal_is_bounded_by_max_nodes(chain):
    alice, _, base, n = chain
    body = traverse(alice, base, n["a"], max_depth=3, max_nodes=3).json()
    assert len(body["nodes"]) == 3 and body["truncated"] is True


@pytest.mark.parametrize(
    "extra",
    [{"max_depth": 4}, {"max_depth": 0}, {"direction": "sideways"}, {"max_nodes": 501}, {"colour": "red"}],
)
def test_bad_traversal_input_is_400(chain, extra):
    alice, _, base, n = chain
    assert traverse(alice, base, n["a"], **extra).status_code == 400


def test_traversal_from_an_unknown_entity_is_404(chain):
    alice, _, base, _ = chain
    assert alice.post(f"{base}/traverse", json={"entity_id": UNKNOWN}).status_code == 404
    assert alice.post(f"{base}/traverse", json={"entity_id": "not-a-uuid"}).status_code == 400
    assert alice.post(f"{base}/traverse", json={}).status_code == 400


# -- tenancy ------------------------------------------------------------------------------------


def test_personal_entities_are_invisible_to_other_users(chain, tenant):
    _, bob, base, n = chain
    assert bob.get(f"{base}/entities/{n['a']['id']}").status_code == 404
    assert bob.delete(f"{base}/entities/{n['a']['id']}").status_code == 404
    assert traverse(bob, base, n["a"]).status_code == 404
    assert bob.get(f"{base}/entities", params={"q": "a"}).json() == []
    assert bob.get(f"{base}/entities").json() == []
    assert bob.get(f"{base}/entities", params={"user_id": "alice"}).json() == []  # only admins pick a user
    carol = tenant("carol")
    assert carol.get(f"{base}/entities").status_code == 404
    assert carol.post(f"{base}/entities", json={"name": "X", "entity_type": "person"}).status_code == 404


def test_the_shared_graph_is_visible_to_everyone_and_written_by_the_owner(graph, admin):
    alice, bob, _, base = graph
    apollo = entity(alice, base, "Apollo", "project", shared=True)
    assert apollo["scope"] == "shared" and apollo["user_id"] == ""
    assert bob.post(f"{base}/entities", json={"name": "Y", "entity_type": "project", "shared": True}).status_code == 403
    assert bob.delete(f"{base}/entities/{apollo['id']}").status_code == 403
    assert [e["name"] for e in bob.get(f"{base}/entities", params={"q": "apollo"}).json()] == ["Apollo"]
    # bob links his own note to the shared project; alice never sees bob's relation or entity
    note = entity(bob, base, "Bob's review", "task")
    assert relate(bob, base, note, "part_of", apollo).status_code == 200
    assert depths(traverse(bob, base, apollo)) == {"Apollo": 0, "Bob's review": 1}
    assert depths(traverse(alice, base, apollo)) == {"Apollo": 0}
    # an admin sees every user's entities, and walks from an entity as its owner sees the graph
    assert {e["name"] for e in admin.get(f"{base}/entities").json()} == {"Apollo", "Bob's review"}
    assert depths(traverse(admin, base, note)) == {"Bob's review": 0, "Apollo": 1}


@pytest.mark.parametrize("ref", [UNKNOWN, "no-such-agent"])
def test_unknown_agent_is_404(tenant, ref):
    alice = tenant("alice")
    base = f"/v1/agents/{ref}/kg"
    assert alice.get(f"{base}/entities").status_code == 404
    assert alice.post(f"{base}/entities", json={"name": "X", "entity_type": "person"}).status_code == 404
    assert alice.post(f"{base}/traverse", json={"entity_id": UNKNOWN}).status_code == 404
    assert alice.get(f"{base}/entities/{UNKNOWN}").status_code == 404
