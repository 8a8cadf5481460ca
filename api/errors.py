"""Every error the API answers is JSON `{"detail": "..."}` in plain words."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def not_found(kind: str, value: object) -> HTTPException:
    return HTTPException(404, f"there is no {kind} with the id {str(value)!r}")


def _validation_words(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "header")]
    field = ".".join(where)
    if kind == "json_invalid":
        return "the request body is not valid JSON"
    if kind == "missing":
        return f"{field or 'the request body'} is missing" + (
            '; send a JSON object such as {"prompt": "..."}' if not field else ""
        )
    if kind.startswith("model_attributes") or kind == "dict_type":
        return 'the request body must be a JSON object such as {"prompt": "..."}'
    return f"{field or 'the request'}: {error.get('msg', 'is not valid').lower()}"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        return JSONResponse({"detail": _validation_words(first)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail
        if error.status_code == 404 and detail == "Not Found":
            detail = "there is no such route"
        elif error.status_code == 405:
            detail = "this route does not take that method"
        return JSONResponse(
            {"detail": str(detail)}, status_code=error.status_code, headers=error.headers
        )
