"""Web page and HTTP API for report drafts (`cxrgen serve`). Research prototype, not for clinical use."""
from cxrgen.serve.app import create_app

__all__ = ["create_app"]
