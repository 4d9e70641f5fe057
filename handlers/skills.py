"""Skills: ZIP upload, list, read, update, delete (see domain/skills.py). `{id}` is the UUID or slug."""

from auth import Principal
from domain import skills


async def get_skills(principal: Principal):
    return await skills.list_skills(principal)


async def post_skills(principal: Principal, file=None):
    return await skills.upload(principal, file), 201


async def get_skills_by_id(principal: Principal, id: str):
    return await skills.get_skill(principal, id)


async def put_skills_by_id(principal: Principal, id: str, body: dict):
    return await skills.update_skill(principal, id, body)


async def delete_skills_by_id(principal: Principal, id: str):
    return await skills.delete_skill(principal, id)
