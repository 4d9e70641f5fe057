"""LLM providers: CRUD (API keys sealed and masked), model listing and verification
(see domain/providers.py). `{id}` is the provider UUID."""

from auth import Principal
from domain import providers


async def get_providers(principal: Principal):
    return await providers.list_providers(principal)


async def post_providers(principal: Principal, body: dict):
    return await providers.create(principal, body), 201


async def get_providers_by_id(principal: Principal, id: str):
    return await providers.get(principal, id)


async def put_providers_by_id(principal: Principal, id: str, body: dict):
    return await providers.update(principal, id, body)


async def delete_providers_by_id(principal: Principal, id: str):
    return await providers.delete(principal, id)


async def get_providers_by_id_models(principal: Principal, id: str):
    return await providers.list_models(principal, id)


async def post_providers_by_id_verify(principal: Principal, id: str, body: dict | bytes | None = None):
    # the body is optional: sent without one (and without Content-Type), Connexion hands over raw bytes
    model = body.get("model") if isinstance(body, dict) else None
    return await providers.verify(principal, id, model)
