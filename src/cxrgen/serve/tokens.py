"""Access tokens for `cxrgen serve`: make one, read them from a file or CXRGEN_TOKEN, check one.

Standard library only, so `cxrgen serve` can refuse a bad start before FastAPI, uvicorn or
torch are imported.
"""
from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from pathlib import Path

from cxrgen.errors import UserError

MIN_CHARS = 32
HOW_TO_MAKE = "make one with `cxrgen serve --new-token`"


def new_token() -> str:
    """A fresh random token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def _problem(token: str) -> str | None:
    if len(token) < MIN_CHARS:
        return f"a token is {len(token)} characters; each must be at least {MIN_CHARS} ({HOW_TO_MAKE})"
    if not all("!" <= c <= "~" for c in token):  # what an HTTP header carries as is
        return f"a token holds a space or a character outside printable ASCII ({HOW_TO_MAKE})"
    return None


def parse_tokens(text: str, source: str) -> tuple[str, ...]:
    """One token per line; blank lines and lines starting with '#' are skipped. Never echoes a token."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if problem := _problem(token):
            raise UserError(f"{source}, line {number}: {problem}")
        tokens.append(token)
    if not tokens:
        raise UserError(f"{source} holds no token ({HOW_TO_MAKE})")
    return tuple(tokens)


def read_tokens(path: Path | None, env: str | None) -> tuple[str, ...]:
    """The tokens of `--token-file PATH`, else of the CXRGEN_TOKEN value `env`; () when neither is given."""
    if path is not None:
        try:
            return parse_tokens(Path(path).read_text(encoding="utf-8"), str(path))
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text file of tokens") from None
    if env is not None:
        return parse_tokens(env, "CXRGEN_TOKEN")
    return ()


class TokenCheck:
    """Accepts a presented token if it equals a configured one; compares against every token in
    constant time (`hmac.compare_digest`), so neither the answer time nor the order tells which."""

    def __init__(self, tokens: Iterable[str]) -> None:
        tokens = tuple(tokens)
        for token in tokens:
            if problem := _problem(token):
                raise ValueError(problem)
        self._tokens = tuple(t.encode() for t in tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def accepts(self, presented: str | None) -> bool:
        given = (presented or "").encode("utf-8", "replace")
        accepted = False
        for token in self._tokens:
            accepted |= hmac.compare_digest(token, given)
        return accepted
