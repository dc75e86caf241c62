"""The few HTML pages users see: the end of a connect flow, or why it failed."""

from __future__ import annotations

import html

import azure.functions as func

_HEADERS = {
    "Cache-Control": "no-store",
    # The callback URL carries a code: never leak it through a Referer.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Keysteward</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;
color:#1b1b1b}}h1{{font-size:1.4rem}}.code{{color:#666;font-size:.85rem}}</style></head>
<body><h1 id="title">{title}</h1><p id="message">{message}</p>{code}</body></html>
"""


def page(
    status: int,
    title: str,
    message: str,
    code: str | None = None,
    set_cookie: str | None = None,
) -> func.HttpResponse:
    body = _TEMPLATE.format(
        title=html.escape(title),
        message=html.escape(message),
        code=f'<p class="code" id="code">{html.escape(code)}</p>' if code else "",
    )
    return func.HttpResponse(
        body,
        status_code=status,
        mimetype="text/html",
        charset="utf-8",
        headers={**_HEADERS, **({"Set-Cookie": set_cookie} if set_cookie else {})},
    )


def redirect(location: str, set_cookie: str | None = None) -> func.HttpResponse:
    cookie = {"Set-Cookie": set_cookie} if set_cookie else {}
    return func.HttpResponse(status_code=302, headers={**_HEADERS, "Location": location, **cookie})
