"""The baseline: a bare Starlette app returning a small JSON body (run with uvicorn)."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(_request):
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/health", hello)])
