"""`cxrgen serve`: the web page and HTTP API for a trained model."""
from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from cxrgen.checkpoint import check_checkpoint
from cxrgen.data.images import DEFAULT_MAX_PIXELS
from cxrgen.errors import UserError
from cxrgen.serve.tokens import new_token, read_tokens

_logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("serve", help="web page + HTTP API for a trained model (loopback only unless --host)",
                       description="Serve the report page and /v1/reports. With --token-file (or CXRGEN_TOKEN) "
                                   "every /v1/ request needs 'Authorization: Bearer <token>'. Binding an address "
                                   "other machines can reach needs a token (or --insecure-no-auth).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="model directory (from `cxrgen train`)")
    what.add_argument("--new-token", action="store_true", help="print a fresh random access token and exit")
    p.add_argument("--clip", type=Path, help="CLIP directory or state-dict file: enables the 3 most similar "
                                             "training cases (IU X-ray training reports)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", type=Path, help="access tokens, one per line, each at least 32 characters "
                                                   "(default: the CXRGEN_TOKEN environment variable)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="bind a non-loopback --host without a token: anyone who reaches it can use it")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. https://viewer.example.org) call the API; repeatable; "
                        "default: none")
    p.add_argument("--max-upload-mb", type=float, default=25, help="limit per uploaded image (default 25)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="limit per image, width x height")
    p.add_argument("--capacity", type=int, default=32, help="requests held at once by the whole server; "
                                                            "more get 503 (default 32)")
    p.add_argument("--batch", type=int, default=8, help="studies per model call (default 8)")
    p.add_argument("--refuse-ood", action="store_true",
                   help="answer 422 instead of a draft when an image is unlike the model's training images "
                        "(default: the draft, with the verdict and a red banner)")
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise UserError(f"--cors-origin {value!r}: give one origin, scheme and host, like https://viewer.example.org")
    return f"{parts.scheme}://{parts.netloc}"


def load_services(model_dir: Path, clip_path: Path | None):
    """Load the generator (and the similar-case search) once; bad paths become UserErrors, the model
    folder's before torch is imported."""
    check_checkpoint(model_dir)
    if clip_path is not None and not clip_path.exists():
        raise UserError(f"--clip {clip_path}: no such file or folder")
    from cxrgen.inference import ReportGenerator
    from cxrgen.serve.similar import SimilarCases

    generator = ReportGenerator.from_pretrained(model_dir)
    return generator, SimilarCases.from_pretrained(clip_path) if clip_path is not None else None


def run(args) -> int:
    if args.new_token:
        print(new_token())
        return 0
    # Every refusal comes before uvicorn, FastAPI or torch is imported: a bad start fails in well under a second.
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be between 0 and 65535")
    if args.token_file is not None and "CXRGEN_TOKEN" in os.environ:
        _logger.info("CXRGEN_TOKEN ignored: the tokens come from --token-file")
    tokens = read_tokens(args.token_file, os.environ.get("CXRGEN_TOKEN"))
    loopback = _is_loopback(args.host)
    if tokens and args.insecure_no_auth:
        raise UserError("--insecure-no-auth and an access token contradict each other: drop one")
    if not loopback and not tokens and not args.insecure_no_auth:
        raise UserError(f"--host {args.host} is reachable from other machines, so it needs an access token: "
                        "run `cxrgen serve --new-token > tokens.txt` and add --token-file tokens.txt "
                        "(or bind 127.0.0.1)")
    origins = [_origin(o) for o in args.cors_origin]
    generator, retriever = load_services(args.model, args.clip)

    import uvicorn

    from cxrgen.serve import create_app

    app = create_app(generator, retriever=retriever, model_name=str(args.model), max_upload_mb=args.max_upload_mb,
                     max_pixels=args.max_pixels, capacity=args.capacity, max_batch=args.batch, tokens=tokens,
                     cors_origins=origins, refuse_ood=args.refuse_ood)
    where = "loopback only: this machine can reach it, others cannot" if loopback else "reachable from other machines"
    _logger.info("serving on http://%s:%d (%s)", args.host, args.port, where)
    if tokens:
        _logger.info("access token required on /v1/ (%d token%s); the page and /healthz are open",
                     len(tokens), "" if len(tokens) == 1 else "s")
    elif not loopback:
        _logger.warning("--insecure-no-auth: NO access token, so anyone who can reach %s:%d can upload images "
                        "and read drafts; the output is a research draft, not a diagnosis", args.host, args.port)
    if not (getattr(generator, "meta", None) or {}).get("ood"):
        from cxrgen.ood import NO_STATS

        _logger.warning("no OOD verdicts: %s", NO_STATS)
    for origin in origins:
        _logger.info("CORS: pages from %s may call the API", origin)
    # The access log holds client address, method, path and status: never headers (so no token),
    # file names or report text. No `server: uvicorn` header.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0
