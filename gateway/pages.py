"""The gateway's own small answers: a preview that is starting, and an address with no preview.

They are complete HTTP responses written on the raw connection (the gateway relays bytes, so it
has no web framework), with no assets: a visitor may be offline from everything but us.
"""

from __future__ import annotations

from html import escape

STARTING_RETRY_SECONDS = 1

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title}</title>
<style>
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:#f7f7f8;color:#1f2328;
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}}
main{{text-align:center;padding:2rem}}
h1{{font-size:1.25rem;font-weight:600;margin:0 0 .5rem}}
p{{margin:0;color:#57606a}}
.spin{{width:28px;height:28px;margin:0 auto 1rem;border:3px solid #d0d7de;border-top-color:#6e56cf;
border-radius:50%;animation:s 1s linear infinite}}
@keyframes s{{to{{transform:rotate(360deg)}}}}
</style></head>
<body><main>{spinner}<h1>{title}</h1><p>{text}</p></main></body></html>
"""


def _response(status: str, body: str, extra_headers: list[str]) -> bytes:
    data = body.encode()
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: text/html; charset=utf-8",
        f"Content-Length: {len(data)}",
        "Cache-Control: no-store",
        "Connection: close",
        *extra_headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def starting() -> bytes:
    """503 while a sandbox starts: the page refreshes itself until the app answers."""
    body = _PAGE.format(
        refresh=f'<meta http-equiv="refresh" content="{STARTING_RETRY_SECONDS}">\n',
        title="Starting your preview…",
        spinner='<div class="spin" role="status" aria-label="Starting"></div>',
        text="The app is being brought back with your latest changes. This takes a few seconds.",
    )
    return _response("503 Service Unavailable", body, [f"Retry-After: {STARTING_RETRY_SECONDS}"])


def not_found(what: str, title: str = "No preview here") -> bytes:
    body = _PAGE.format(refresh="", title=escape(title), spinner="", text=escape(what))
    return _response("404 Not Found", body, [])


def bad_request(what: str) -> bytes:
    body = _PAGE.format(refresh="", title="Bad request", spinner="", text=escape(what))
    return _response("400 Bad Request", body, [])


def busy() -> bytes:
    """503 when the gateway holds as many connections as it may."""
    body = _PAGE.format(
        refresh="", title="Too busy", spinner="", text="Too many connections; try again shortly."
    )
    return _response("503 Service Unavailable", body, ["Retry-After: 5"])
