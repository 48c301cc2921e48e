"""Security headers on every answer, and CORS only for the origins an operator names.

The page and the docs page load nothing but their own files (no inline script or
style), so they run under a policy of 'self' only. The Swagger UI at /schema is
Litestar's and loads its bundle from a CDN with an inline start-up script: it gets
a policy of its own that allows exactly that, and is still never framed.
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

STRICT_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "media-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SWAGGER_CDN = "https://cdn.jsdelivr.net"
SWAGGER_POLICY = "; ".join(
    [
        "default-src 'self'",
        f"script-src 'self' 'unsafe-inline' {SWAGGER_CDN}",
        f"style-src 'self' 'unsafe-inline' {SWAGGER_CDN}",
        f"img-src 'self' data: {SWAGGER_CDN}",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
}


SWAGGER_PAGES = frozenset({"/schema", "/schema/", "/schema/swagger"})


def policy_for(path: str) -> str:
    return SWAGGER_POLICY if path in SWAGGER_PAGES else STRICT_POLICY


async def add_security_headers(message: Message, scope: Scope) -> None:
    """A before-send hook: it sees every answer the app sends, 404s and errors included
    (middleware only wraps matched routes)."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in _ALWAYS.items():
            headers[name] = value
        headers["Content-Security-Policy"] = policy_for(scope["path"])


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """CORS for the named origins only; None (no CORS headers at all) when none is named."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=600,
    )
