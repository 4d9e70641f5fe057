"""Skills at run time: which skills an agent has, the system-prompt section, and `use_skill`.

A skill is a folder stored under `<data dir>/<file_path>` (see domain/skills.py) whose
`SKILL.md` holds YAML frontmatter and the instructions. An enabled, active skill belongs to an
agent when the agent is granted it explicitly, or — for a skill without grants — when the skill's
owner is the agent's owner or the skill is shared (owner '').
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from xml.sax.saxutils import escape

import db
from agent.tools import ToolResult, allowed_by_policy
from auth import Principal

SKILL_FILE = "SKILL.md"
PROMPT_MAX_SKILLS = 40
PROMPT_MAX_CHARS = 20000
BODY_MAX_BYTES = 256 * 1024

FOR_AGENT_SQL = """
SELECT s.id, s.slug, s.name, s.description, s.version, s.file_path
FROM skills s
WHERE s.enabled AND s.status = 'active'
  AND (EXISTS (SELECT 1 FROM skill_agent_grants g WHERE g.skill_id = s.id AND g.agent_id = %(agent)s)
       OR (NOT EXISTS (SELECT 1 FROM skill_agent_grants g WHERE g.skill_id = s.id)
           AND s.owner_id IN (%(owner)s, '')))
ORDER BY (s.owner_id = ''), s.name, s.id
"""
USE_SKILL_ENABLED_SQL = "SELECT enabled FROM builtin_tools WHERE name = 'use_skill'"


def skill_dir(file_path: str) -> Path:
    from gateway import state

    return (state.settings.data_dir / file_path).absolute()


def split_frontmatter(text: str) -> tuple[str, str]:
    """(frontmatter YAML text, body) of a SKILL.md; frontmatter '' when there is none."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            after = text.find("\n", end + 4)
            body = text[after + 1:] if after != -1 else ""
            return text[4:end], body
    return "", text


async def skills_for_agent(agent: dict) -> list[dict]:
    rows = await db.fetch_all(FOR_AGENT_SQL, {"agent": agent["id"], "owner": agent.get("owner_id") or ""})
    seen: set[str] = set()
    unique = []
    for row in rows:  # an owner's skill shadows a shared one with the same slug
        if row["slug"] not in seen:
            seen.add(row["slug"])
            unique.append(row)
    return unique


async def skills_prompt(principal: Principal, agent: dict) -> str:
    """The system-prompt section naming the agent's skills ('' when it has none or cannot use them)."""
    if not allowed_by_policy("use_skill", agent.get("tools_config")):
        return ""
    enabled = await db.fetch_one(USE_SKILL_ENABLED_SQL)
    if not enabled or not enabled["enabled"]:
        return ""
    skills = await skills_for_agent(agent)
    if not skills:
        return ""
    lines = [
        "## Skills",
        "You have these skills. When a task matches a skill's description, first call the `use_skill` tool "
        "with its name to load the full instructions, then follow them.",
        "<available_skills>",
    ]
    size = sum(len(line) for line in lines)
    shown = 0
    for skill in skills[:PROMPT_MAX_SKILLS]:
        entry = (f"<skill><name>{escape(skill['slug'])}</name>"
                 f"<description>{escape((skill['description'] or skill['name'])[:500])}</description></skill>")
        if size + len(entry) > PROMPT_MAX_CHARS:
            break
        lines.append(entry)
        size += len(entry)
        shown += 1
    lines.append("</available_skills>")
    if shown < len(skills):
        lines.append(f"({len(skills) - shown} more skills are available; use_skill accepts any of their names.)")
    return "\n".join(lines)


def _read_text(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(BODY_MAX_BYTES + 1)
    text = data[:BODY_MAX_BYTES].decode("utf-8", "replace")
    if len(data) > BODY_MAX_BYTES:
        text += f"\n[truncated at {BODY_MAX_BYTES} bytes]"
    return text


def _list_files(folder: Path) -> list[str]:
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != SKILL_FILE:
            files.append(path.relative_to(folder).as_posix())
        if len(files) >= 200:
            break
    return files


async def use_skill(agent: dict, name: str, file: str | None = None) -> ToolResult | str:
    """The instructions of the agent's skill `name` (slug or display name, case-insensitive)."""
    skills = await skills_for_agent(agent)
    wanted = name.strip().lower()
    skill = next((s for s in skills if s["slug"] == wanted), None) or next(
        (s for s in skills if (s["name"] or "").strip().lower() == wanted), None
    )
    if skill is None:
        names = ", ".join(s["slug"] for s in skills) or "none"
        return ToolResult(f"no skill named {name!r}; available skills: {names}", True)
    folder = skill_dir(skill["file_path"])
    if file:
        from domain.workspace import resolve_inside

        target = resolve_inside(folder, file)
        if not target.is_file():
            return ToolResult(f"skill {skill['slug']} has no file {file!r}", True)
        return await asyncio.to_thread(_read_text, target)
    try:
        text = await asyncio.to_thread(_read_text, folder / SKILL_FILE)
    except OSError:
        return ToolResult(f"the files of skill {skill['slug']} are missing on this gateway", True)
    _front, body = split_frontmatter(text)
    others = await asyncio.to_thread(_list_files, folder)
    header = f"# Skill: {skill['name']} ({skill['slug']}, version {skill['version']})\n\n"
    footer = ""
    if others:
        footer = "\n\nOther files in this skill (read one with use_skill and `file`): " + ", ".join(others)
    return header + body.strip() + footer
