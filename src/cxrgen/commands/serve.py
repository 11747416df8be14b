"""`cxrgen serve`: the web page and HTTP API for a trained model."""
from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from cxrgen.data.images import DEFAULT_MAX_PIXELS
from cxrgen.errors import UserError

_logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("serve", help="web page + HTTP API for a trained model (loopback only unless --host)",
                       description="Serve the report page and /v1/reports. Research prototype: no authentication, "
                                   "so it binds to 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--model", required=True, type=Path, help="model directory (from `cxrgen train`)")
    p.add_argument("--clip", type=Path, help="CLIP directory or state-dict file: enables the 3 most similar "
                                             "training cases (IU X-ray training reports)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=25, help="limit per uploaded image (default 25)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="limit per image, width x height")
    p.add_argument("--capacity", type=int, default=32, help="requests held at once; more get 503 (default 32)")
    p.add_argument("--batch", type=int, default=8, help="studies per model call (default 8)")
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_services(model_dir: Path, clip_path: Path | None):
    """Load the generator (and the similar-case search) once; bad paths become UserErrors."""
    from cxrgen.inference import ReportGenerator
    from cxrgen.serve.similar import SimilarCases

    generator = ReportGenerator.from_pretrained(model_dir)
    return generator, SimilarCases.from_pretrained(clip_path) if clip_path is not None else None


def run(args) -> int:
    import uvicorn

    from cxrgen.serve import create_app

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be between 0 and 65535")
    generator, retriever = load_services(args.model, args.clip)
    app = create_app(generator, retriever=retriever, model_name=str(args.model), max_upload_mb=args.max_upload_mb,
                     max_pixels=args.max_pixels, capacity=args.capacity, max_batch=args.batch)
    if _is_loopback(args.host):
        _logger.info("serving on http://%s:%d (loopback only: this machine can reach it, others cannot)",
                     args.host, args.port)
    else:
        _logger.warning("serving on http://%s:%d, reachable from other machines: there is no authentication, "
                        "and the output is a research draft, not a diagnosis", args.host, args.port)
    # Access log lines hold method, path and status only; uploads are never logged.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
