"""The FastAPI app: routes, the token check, body limits, JSON errors and offline /docs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from api import auth, errors
from api.context import ApiContext
from api.guard import SiteGuardMiddleware
from api.limits import BodyLimitMiddleware
from api.routes import fragments, git, health, projects, publish
from api.templating import STATIC
from api.ui import pages
from runtime.metrics import RequestMetricsMiddleware, metrics_route

ASSETS = "/docs-assets"


def create_app(context: ApiContext) -> FastAPI:
    """An app bound to `context`; serving it is the caller's (uvicorn) business."""
    app = FastAPI(
        title="qai",
        summary="Turn a prompt into a running Next.js app.",
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    errors.install(app)

    @app.middleware("http")
    async def require_token(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path.startswith(("/static/", f"{ASSETS}/")) or path in {"/metrics", "/healthz"}:
            return await call_next(request)  # public files and probes: no session lookup
        identity = await auth.identify(request)
        if identity is None and path.startswith(("/api", "/ui/")):
            if request.headers.get("authorization"):  # a wrong token: slow the guessing down
                refused = auth.wrong_token_refusal(request)
                if refused is not None:
                    return refused
                await asyncio.sleep(auth.WRONG_TOKEN_DELAY_SECONDS)
            return auth.unauthorized()
        if path.startswith(git.PREFIX) and not auth.git_authorized(request):
            return auth.git_unauthorized()
        if identity is not None and not await auth.csrf_ok(request, identity):
            return auth.forbidden_without_csrf()
        return await call_next(request)

    app.add_middleware(BodyLimitMiddleware)
    # Host and Origin before anything reads a body or the database (this app's routes and any
    # added later alike), with anti-framing headers on every answer.
    settings = context.settings
    app.add_middleware(
        SiteGuardMiddleware,
        allowed_hosts=settings.allowed_hosts,
        public_origin=settings.qai_public_url,
    )
    app.add_middleware(RequestMetricsMiddleware)  # outermost: sees 401s, 413s and 421s too
    app.add_route("/metrics", metrics_route, include_in_schema=False)  # no token: Prometheus
    app.include_router(projects.router)
    app.include_router(fragments.router)
    app.include_router(git.router)
    app.include_router(publish.router)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Swagger UI from the installed package: /docs loads nothing from outside this machine.
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="qai API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    return app
