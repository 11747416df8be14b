"""Web page and HTTP API for report drafts (`cxrgen serve`). Research prototype, not for clinical use."""
from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    # Imported on first use, so `cxrgen.serve.tokens` loads without FastAPI: `cxrgen serve` can
    # refuse a bad start (an open address without a token) in a fraction of a second.
    if name == "create_app":
        from cxrgen.serve.app import create_app
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
