"""Skills: ZIP upload with its safety rules (size, zip bombs, traversal, symlinks, frontmatter),
versions, CRUD over HTTP, and what the agent gets at run time (prompt section, use_skill)."""

from __future__ import annotations

import io
import stat
import uuid
import zipfile

import pytest

from tests.test_tools import call, gateway_data_dir, make_agent, run, toolset_for


def skill_md(name: str, description: str = "Does a thing", body: str = "Step 1: think.\n", **extra) -> str:
    lines = ["---", f"name: {name}", f"description: {description}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join([*lines, "---", body])


def make_zip(entries: dict[str, bytes | str], *, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(prefix + name, data)
    return buffer.getvalue()


def upload(client, data: bytes, filename: str = "skill.zip"):
    return client.post("/v1/skills", files={"file": (filename, data, "application/zip")})


@pytest.fixture
def skill(admin):
    """Factory: upload a skill ZIP (deleted afterwards); returns the created skill."""
    made = []

    def make(client=None, **md):
        slug = md.pop("slug", f"sk-{uuid.uuid4().hex[:8]}")
        files = md.pop("files", {})
        data = make_zip({"SKILL.md": skill_md(md.pop("name", slug), slug=slug, **md), **files})
        response = upload(client or admin, data)
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
        return response.json()

    yield make
    for skill_id in made:
        admin.delete(f"/v1/skills/{skill_id}")


def test_upload_stores_files_and_returns_the_skill(admin, gateway, skill):
    created = skill(name="Weather Report", description="Report the weather", version="1.2.0",
                    files={"scripts/run.py": "print('hi')\n", "__MACOSX/._junk": "x", ".DS_Store": "x"})
    assert created["name"] == "Weather Report" and created["description"] == "Report the weather"
    assert created["version"] == 1 and created["status"] == "active" and created["enabled"] is True
    assert created["frontmatter"]["version"] == "1.2.0" and created["files"] == ["SKILL.md", "scripts/run.py"]
    folder = gateway_data_dir(gateway) / created["path"]
    assert (folder / "SKILL.md").read_text().startswith("---") and (folder / "scripts" / "run.py").exists()
    assert admin.get(f"/v1/skills/{created['id']}").json()["files"] == ["SKILL.md", "scripts/run.py"]
    assert admin.get(f"/v1/skills/{created['slug']}").json()["id"] == created["id"]
    listed = [s["id"] for s in admin.get("/v1/skills").json()["skills"]]
    assert created["id"] in listed
    logs = admin.get("/v1/activity", params={"entity_id": created["id"]}).json()["logs"]
    assert logs[0]["action"] == "skill.uploaded"


def test_skill_md_inside_one_top_level_folder_is_accepted(admin, skill):
    slug = f"nested-{uuid.uuid4().hex[:6]}"
    data = make_zip({"SKILL.md": skill_md("Nested", slug=slug), "ref/notes.md": "notes"}, prefix="my-skill/")
    response = upload(admin, data)
    assert response.status_code == 201, response.text
    assert response.json()["files"] == ["SKILL.md", "ref/notes.md"]
    admin.delete(f"/v1/skills/{response.json()['id']}")


def test_uploading_the_same_slug_again_makes_a_new_version(admin, gateway, skill):
    first = skill(description="v1")
    data = make_zip({"SKILL.md": skill_md(first["name"], description="v2", slug=first["slug"])})
    second = upload(admin, data).json()
    assert second["id"] == first["id"] and second["version"] == 2 and second["description"] == "v2"
    assert (gateway_data_dir(gateway) / second["path"]).is_dir()
    assert not (gateway_data_dir(gateway) / first["path"]).exists()  # only the current version is kept


def test_update_and_delete(admin, gateway, database, skill):
    created = skill()
    agent_id = make_agent(database)
    response = admin.put(f"/v1/skills/{created['slug']}",
                         json={"description": "better", "enabled": False, "tags": ["a"], "agent_ids": [agent_id]})
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "better" and response.json()["enabled"] is False
    assert response.json()["agent_ids"] == [agent_id] and response.json()["tags"] == ["a"]
    assert admin.put(f"/v1/skills/{created['id']}", json={"slug": "x"}).status_code == 400
    deleted = admin.delete(f"/v1/skills/{created['id']}").json()
    assert deleted == {"status": "deleted", "id": created["id"], "slug": created["slug"]}
    assert admin.get(f"/v1/skills/{created['id']}").status_code == 404
    assert not (gateway_data_dir(gateway) / created["path"]).exists()


def test_tenants_see_their_own_and_shared_skills(client_for, make_key, skill, admin):
    key, _ = make_key("operator.write")
    kim, lee = client_for(key, user="kim"), client_for(key, user="lee")
    kims = skill(client=kim)
    shared = skill()
    assert kims["owner_id"] == "kim"
    assert lee.get(f"/v1/skills/{kims['id']}").status_code == 404
    assert lee.get(f"/v1/skills/{kims['slug']}").status_code == 404
    assert lee.delete(f"/v1/skills/{kims['id']}").status_code == 404
    assert lee.get(f"/v1/skills/{shared['id']}").status_code == 200
    assert lee.put(f"/v1/skills/{shared['id']}", json={"enabled": False}).status_code == 403
    assert kim.put(f"/v1/skills/{kims['id']}", json={"enabled": False}).status_code == 200


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SKILL.md", skill_md("Linky", slug="linky"))
        info = zipfile.ZipInfo("evil-link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _encrypted_zip() -> bytes:
    data = bytearray(make_zip({"SKILL.md": skill_md("Locked", slug="locked"), "secret.txt": "x"}))
    index = data.rfind(b"PK\x01\x02")  # central directory record of the last entry
    data[index + 8] |= 0x1  # general purpose flag: encrypted
    return bytes(data)


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("SKILL.md", skill_md("Bomb", slug="bomb"))
        archive.writestr("zeros.bin", b"\0" * (8 << 20))  # 8 MiB of zeros compress ~1000:1
    return buffer.getvalue()


def _too_big_expanded() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", skill_md("Huge", slug="huge"))
        info = zipfile.ZipInfo("big.bin")
        archive.writestr(info, b"")
    data = bytearray(buffer.getvalue())
    # declare 60 MiB uncompressed for big.bin in its central directory entry (offset 24 in the record)
    index = data.rfind(b"PK\x01\x02")
    data[index + 24:index + 28] = (60 << 20).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"definitely not a zip", 400, "ZIP"),
        (make_zip({"SKILL.md": skill_md("Cut")})[:-30], 400, "ZIP"),
        (make_zip({"README.md": "no skill here"}), 400, "SKILL.md"),
        (make_zip({"SKILL.md": "just text, no frontmatter"}), 400, "frontmatter"),
        (make_zip({"SKILL.md": "---\ndescription: nameless\n---\nbody"}), 400, "name"),
        (make_zip({"SKILL.md": "---\nname: x\n---\nbody"}), 400, "description"),
        (make_zip({"SKILL.md": "---\nname: [unclosed\n---\n"}), 400, "YAML"),
        (make_zip({"SKILL.md": b"---\nname: caf\xe9\ndescription: d\n---\n"}), 400, "UTF-8"),
        (make_zip({"SKILL.md": skill_md("Bad slug", slug="Bad_Slug")}), 400, "slug"),
        (make_zip({"SKILL.md": skill_md("Esc"), "../escape.txt": "x"}), 400, ".."),
        (make_zip({"SKILL.md": skill_md("Abs"), "/etc/cron.d/x": "x"}), 400, "absolute"),
        (make_zip({"SKILL.md": skill_md("Back"), "a\\..\\b.txt": "x"}), 400, "backslash"),
        (make_zip({"a/SKILL.md": skill_md("Two"), "b/SKILL.md": skill_md("Two")}), 400, "top-level"),
        (make_zip({"SKILL.md": skill_md("Clash", slug="clash"), "x": "file", "x/y": "under a file"}), 400, "clashes"),
        (make_zip({"SKILL.md": skill_md("Many"), **{f"f{i}.txt": "x" for i in range(501)}}), 400, "entries"),
        (_symlink_zip(), 400, "symbolic link"),
        (_encrypted_zip(), 400, "encrypted"),
        (_zip_bomb(), 413, "zip bomb"),
        (_too_big_expanded(), 413, "expands"),
    ],
    ids=["not-zip", "truncated", "no-skill-md", "no-frontmatter", "no-name", "no-description", "bad-yaml",
         "not-utf8", "bad-slug", "dotdot", "absolute", "backslash", "two-skills", "clash", "too-many-entries",
         "symlink", "encrypted", "zip-bomb", "declared-size"],
)
def test_bad_archives_are_refused_and_leave_nothing_behind(admin, gateway, data, status, fragment):
    before = len(admin.get("/v1/skills").json()["skills"])
    response = upload(admin, data)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert len(admin.get("/v1/skills").json()["skills"]) == before
    leftovers = [p for p in (gateway_data_dir(gateway) / "skills").glob(".upload-*")]
    assert leftovers == []


def test_upload_limits_and_missing_file(admin):
    too_big = make_zip({"SKILL.md": skill_md("Big")}) + b"\0" * (20 << 20)
    assert upload(admin, too_big).status_code == 413
    response = admin.post("/v1/skills", files={"other": ("x.zip", b"x", "application/zip")})
    assert response.status_code == 400


def test_agents_get_their_skills_in_the_prompt_and_through_use_skill(
    gateway, database, tmp_path, skill, admin, client_for
):
    from tests.support.processes import TEST_TOKEN

    owner = f"mia-{uuid.uuid4().hex[:6]}"
    agent_id = make_agent(database, owner=owner)
    other_agent = make_agent(database, owner=owner)
    owner_client = client_for(TEST_TOKEN, user=owner)
    mine = skill(client=owner_client, name="Brewing", description="How to brew <good> coffee",
                 body="Grind {baseDir} beans.\nUse 92C water.\n", files={"ratios.md": "1:16"})
    granted = skill(client=owner_client, name="Secret", description="Only for one agent")
    off = skill(client=owner_client, name="Dormant", description="Disabled skill")
    admin.put(f"/v1/skills/{granted['id']}", json={"agent_ids": [other_agent]})
    admin.put(f"/v1/skills/{off['id']}", json={"enabled": False})

    async def scenario():
        from agent.skills import skills_prompt
        from tests.test_tools import agent_row, principal_for

        agent = await agent_row(agent_id)
        return {
            "prompt": await skills_prompt(principal_for(owner), agent),
            "names": (await toolset_for(agent_id)).names(),
            "body": await call(agent_id, tmp_path, "use_skill", {"name": mine["slug"]}),
            "by_name": await call(agent_id, tmp_path, "use_skill", {"name": "brewing"}),
            "file": await call(agent_id, tmp_path, "use_skill", {"name": mine["slug"], "file": "ratios.md"}),
            "escape": await call(agent_id, tmp_path, "use_skill", {"name": mine["slug"], "file": "../../x"}),
            "not_mine": await call(agent_id, tmp_path, "use_skill", {"name": granted["slug"]}),
            "disabled": await call(agent_id, tmp_path, "use_skill", {"name": off["slug"]}),
        }

    r = run(database, gateway_data_dir(gateway), scenario)
    assert f"<name>{mine['slug']}</name>" in r["prompt"] and "How to brew &lt;good&gt; coffee" in r["prompt"]
    assert granted["slug"] not in r["prompt"] and off["slug"] not in r["prompt"]
    assert "use_skill" in r["names"]
    assert "Use 92C water." in r["body"].content and "description:" not in r["body"].content
    assert "ratios.md" in r["body"].content and r["by_name"].content == r["body"].content
    assert r["file"].content == "1:16"
    assert r["escape"].is_error
    assert r["not_mine"].is_error and r["disabled"].is_error and mine["slug"] in r["not_mine"].content


def test_agents_without_skills_are_not_offered_use_skill(gateway, database):
    agent_id = make_agent(database, owner=f"nobody-{uuid.uuid4().hex[:6]}")

    async def scenario():
        from agent.skills import skills_prompt
        from tests.test_tools import agent_row, principal_for

        return (await toolset_for(agent_id)).names(), await skills_prompt(principal_for(), await agent_row(agent_id))

    names, prompt = run(database, gateway_data_dir(gateway), scenario)
    assert "use_skill" not in names and prompt == ""
