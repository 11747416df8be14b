"""The door of the app: the access token on every /v1/ request, and security headers on every answer.

A pure ASGI middleware, so the check happens before any route runs or any body is read: a
request without the right token never takes a slot, never uploads, and covers every /v1/
path, ones added later included.
"""
from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxrgen.serve.tokens import TokenCheck

PROTECTED = "/v1/"
UNAUTHORIZED = "missing or wrong access token: send the header 'Authorization: Bearer <token>'"

# Only this server's own files; images may be data: URLs (the previews and the heatmap).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def bearer(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class Guard:
    def __init__(self, app: ASGIApp, tokens: TokenCheck) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith(PROTECTED) or scope["path"] == PROTECTED.rstrip("/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if api:  # drafts and reports are not for any cache between here and the client
                    headers["Cache-Control"] = "no-store"
            await send(message)

        if api and self.tokens and not self.tokens.accepts(bearer(scope)):
            refusal = JSONResponse({"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
