"""The FastAPI app: the page, `POST /v1/reports`, `POST /v1/simplify`, `GET /v1/info`, `GET /v1/model`,
`GET /healthz`.

The model, the simplifier and the optional CLIP retriever are built by the caller and
injected into `create_app`, so tests can serve a tiny checkpoint and the CLI loads each
model exactly once. All requests share the one model through a `BatchWorker`. With access
tokens, every /v1/ request needs one (`cxrgen.serve.guard`); the page and /healthz stay open.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cxrgen import DISCLAIMER, __version__
from cxrgen.checkpoint import model_card
from cxrgen.data.images import DEFAULT_MAX_PIXELS
from cxrgen.serve import render
from cxrgen.serve.guard import UNAUTHORIZED, Guard
from cxrgen.serve.tokens import TokenCheck
from cxrgen.serve.uploads import HOW_TO, UploadError, decode_upload, read_images
from cxrgen.serve.worker import BatchWorker, Busy, Result

STATIC = resources.files("cxrgen.serve") / "static"
N_SIMILAR = 3
UNLIKE = "This image is unlike the images this model was trained on; the draft is not meaningful"


class Generator(Protocol):
    def generate_batch(self, frontals: list[np.ndarray], laterals: list[np.ndarray | None],
                       skip_flagged: bool = False) -> list[dict]: ...


class Retriever(Protocol):
    def search(self, frontal: np.ndarray, lateral: np.ndarray | None, k: int) -> list[dict]: ...


Simplifier = Callable[[str], Any]  # report -> result with .plain, .guard and .note (see cxrgen.simplify)


# ---- HTTP schemas ----------------------------------------------------------------------

class SimilarCase(BaseModel):
    study_id: str
    report: str
    score: float = Field(description="cosine similarity in the CLIP space")


class Images(BaseModel):
    frontal: str = Field(description="JPEG data URL of the decoded frontal view (what the model saw)")
    lateral: str | None = None


class Timing(BaseModel):
    read_ms: float = Field(description="receiving, checking and decoding the upload")
    queue_ms: float
    model_ms: float = Field(description="the model call; shared by every request in the same batch")
    batch_size: int
    simplify_ms: float
    total_ms: float


class OODVerdict(BaseModel):
    view: Literal["frontal", "lateral"]
    score: float | None = Field(description="distance of the image's encoder features from the training images' "
                                            "(Mahalanobis); null when the model has no statistics for this view")
    threshold: float | None = Field(description="scores above it are flagged: a quantile (default the 99th "
                                                "percentile) of the validation images' scores")
    flag: bool = Field(description="true: the image is unlike this view's training images")


class ReportOut(BaseModel):
    report: str = Field(description="draft findings written by the model")
    plain: str = Field(description="plain-language version for patients")
    guard: dict[str, Any] = Field(description="consistency check of the plain version against the report")
    plain_note: str = Field(description="the note that goes with the plain version")
    probabilities: dict[str, float] = Field(description="the 14 CheXpert findings, in CheXpert order")
    calls: list[str] = Field(description="the findings the classifier calls present, each at its own threshold "
                                         "(tuned on the validation split), not at 0.5")
    sides: dict[str, str] = Field(description="where the image shows each called finding that the model has a "
                                             "side model for: left, right or bilateral (the patient's sides)")
    extras: dict[str, float] = Field(description="findings outside the 14 that the model reads from the images "
                                                "(the labeler's terms, e.g. degenerative changes), each with its "
                                                "probability; called, and stated by the draft, at 0.5, or the likeliest "
                                                "one where none of the 14 is called")
    unstated: list[str] = Field(description="called findings that the draft does not state; "
                                            "empty when draft and calls agree")
    uncalled: list[str] = Field(description="findings the draft states (present or uncertain) that the "
                                            "classifier does not call; empty when draft and calls agree")
    similar_cases: list[SimilarCase] | None = Field(description="nearest training cases; null without --clip")
    heatmap: str | None = Field(description="PNG data URL (transparent) of the decoder's cross-attention "
                                            "over the frontal view, same size as images.frontal")
    images: Images
    ood: list[OODVerdict] | None = Field(description="one verdict per view given, frontal first; null when the "
                                                     "model has no training statistics (no check was made)")
    timing: Timing
    disclaimer: str = DISCLAIMER


class SimplifyIn(BaseModel):
    report: str = Field(min_length=1, max_length=20_000, description="a radiology report")


class SimplifyOut(BaseModel):
    plain: str
    guard: dict[str, Any]
    plain_note: str
    disclaimer: str = DISCLAIMER


class Health(BaseModel):
    """Open to all, so it says nothing about the model or the data."""
    status: str
    version: str
    in_flight: int
    capacity: int


class Info(BaseModel):
    version: str
    model: str = Field(description="the model directory the server was started with")
    clip: bool = Field(description="whether similar-case retrieval is available")


class TrainingData(BaseModel):
    layout: str | None = Field(description="the dataset layout, e.g. phantom, iu-xray-r2gen, mimic")
    phantom: bool | None = Field(description="true: trained on rendered phantom images, not real radiographs")
    studies: dict[str, int | None] = Field(description="studies per split: train, val, test")


class OODCheck(BaseModel):
    quantile: float | None
    thresholds: dict[str, float | None] = Field(description="per view")


class ModelCard(BaseModel):
    """What the model is; a field the checkpoint does not record is null."""
    model: str = Field(description="the model directory the server was started with")
    data: TrainingData
    trained_at: str | None = Field(description="date the training finished, YYYY-MM-DD")
    test_metrics: dict[str, Any] | None = Field(description="test-split metrics, when recorded")
    ood_check: OODCheck | None = Field(description="null: no check of whether an image is like the training images")
    cxrgen_version: str | None = Field(description="the cxrgen version that wrote the checkpoint")


class Problem(BaseModel):
    detail: str


# Error bodies are {"detail": "message"}; /v1/simplify keeps FastAPI's own 422 for schema errors.
UPLOAD_ERRORS = {code: {"model": Problem} for code in (400, 413, 415, 422, 500, 503)}
# With tokens, /v1/ routes declare the bearer scheme (Swagger's Authorize button) and the 401.
# The check itself is cxrgen.serve.guard's, before any route; HTTPBearer here only documents it.
BEARER = HTTPBearer(scheme_name="bearer", auto_error=False,
                    description="an access token of this server: `Authorization: Bearer <token>`")
UNAUTHORIZED_RESPONSE = {401: {"model": Problem, "description": UNAUTHORIZED,
                               "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}}}


# ---- wiring ----------------------------------------------------------------------------

@dataclasses.dataclass
class Services:
    """Everything a request needs, created once per app."""
    worker: BatchWorker
    simplifier: Simplifier
    model_name: str
    clip: bool
    max_bytes: int
    max_pixels: int
    card: dict[str, Any]
    refuse_ood: bool


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def _infer(generator: Generator, retriever: Retriever | None, refuse_ood: bool) -> Callable[[list[Any]], list[dict]]:
    """The worker's batch function: the generator on the whole batch, then retrieval per study. With
    `refuse_ood`, a study flagged as unlike the training images is neither decoded nor searched."""
    def run(items: list[tuple[np.ndarray, np.ndarray | None]]) -> list[dict]:
        frontals, laterals = [f for f, _ in items], [lat for _, lat in items]
        outs = generator.generate_batch(frontals, laterals, skip_flagged=refuse_ood)
        for out, (frontal, lateral) in zip(outs, items):
            drafted = retriever is not None and out["report"] is not None
            out["similar_cases"] = retriever.search(frontal, lateral, N_SIMILAR) if drafted else None
        return outs
    return run


def create_app(generator: Generator, simplifier: Simplifier | None = None, retriever: Retriever | None = None, *,
               model_name: str = "model", max_upload_mb: float = 25, max_pixels: int = DEFAULT_MAX_PIXELS,
               capacity: int = 32, max_batch: int = 8, tokens: Iterable[str] = (),
               cors_origins: Sequence[str] = (), model_meta: dict | None = None, refuse_ood: bool = False) -> FastAPI:
    """Build the app around already-loaded models.

    Args:
        generator: report generator; `generate_batch(frontals, laterals, skip_flagged)` -> one dict
            per study with "report", "probabilities", "attention" ((h, w) array or None) and
            optionally "ood" (the verdicts of `cxrgen.ood`, one per view given, or None); with
            `skip_flagged`, a study with a flagged view is not decoded and its "report" is None.
        simplifier: `simplify(report)` -> result with `.plain`, `.guard` and `.note`; default
            `cxrgen.simplify.simplify`.
        retriever: CLIP retrieval for similar training cases, or None (the page says it is unavailable).
        max_upload_mb: limit per uploaded image (413 above it).
        max_pixels: limit on width x height x frames, checked from the header before decoding (413).
        capacity: requests held at once; the next one gets 503 instead of more memory.
        max_batch: studies per model call.
        tokens: access tokens (each at least 32 printable ASCII characters); when any is given,
            every /v1/ request needs `Authorization: Bearer <one of them>` (else 401).
        cors_origins: origins whose pages may call the API from a browser; none by default.
        model_meta: the checkpoint's meta.json, for `GET /v1/model`; default the generator's `meta`.
        refuse_ood: answer 422 instead of a draft when an image is flagged as unlike the training images;
            such an image is not decoded at all.
    """
    check = TokenCheck(tokens)
    if simplifier is None:
        from cxrgen.simplify import simplify as simplifier
    worker = BatchWorker(_infer(generator, retriever, refuse_ood), capacity=capacity, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()

    # No /docs or /redoc: FastAPI's Swagger UI loads from a CDN and the page must work offline.
    app = FastAPI(title="cxrgen", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Chest X-ray report drafts. {DISCLAIMER}")
    meta = model_meta if model_meta is not None else getattr(generator, "meta", None) or {}
    app.state.services = Services(worker, simplifier, model_name, retriever is not None,
                                  int(max_upload_mb * 2**20), max_pixels, model_card(meta), refuse_ood)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(_open_routes())
    app.include_router(_v1_routes(), prefix="/v1", dependencies=[Security(BEARER)] if check else [],
                       responses=UNAUTHORIZED_RESPONSE if check else {})
    app.add_middleware(Guard, tokens=check)
    if cors_origins:  # added last, so it answers preflight requests (which carry no token) first
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _compose(s: Services, views: dict[str, np.ndarray], result: Result, read_s: float,
             start: float) -> ReportOut:
    """Model output -> response: plain version, previews, heatmap, timing."""
    out = result.output
    t0 = time.perf_counter()
    simple = s.simplifier(out["report"])
    simplify_s = time.perf_counter() - t0
    frontal, size = render.preview(views["frontal"])
    lateral = render.preview(views["lateral"])[0] if "lateral" in views else None
    attention = out.get("attention")
    return ReportOut(
        report=out["report"], plain=simple.plain, guard=simple.guard, plain_note=simple.note,
        probabilities={k: float(v) for k, v in out["probabilities"].items()},
        calls=out.get("calls", []), sides=out.get("sides", {}), extras=out.get("extras", {}),
        unstated=out.get("unstated", []), uncalled=out.get("uncalled", []),
        similar_cases=out["similar_cases"],
        heatmap=render.heatmap(attention, size) if attention is not None else None,
        images=Images(frontal=frontal, lateral=lateral),
        ood=out.get("ood"),
        timing=Timing(read_ms=1e3 * read_s, queue_ms=1e3 * result.queue_s, model_ms=1e3 * result.batch_s,
                      batch_size=result.batch_size, simplify_ms=1e3 * simplify_s,
                      total_ms=1e3 * (time.perf_counter() - start)),
    )


def _open_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @router.get("/healthz", response_model=Health)
    def healthz(s: ServicesDep) -> Health:
        return Health(status="ok", version=__version__, in_flight=s.worker.in_flight, capacity=s.worker.capacity)

    return router


def _v1_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/info", response_model=Info, summary="The model this server runs")
    def info(s: ServicesDep) -> Info:
        return Info(version=__version__, model=s.model_name, clip=s.clip)

    @router.get("/model", response_model=ModelCard, summary="The model card: training data, date, test metrics, "
                                                             "OOD check")
    def card(s: ServicesDep) -> ModelCard:
        return ModelCard(model=s.model_name, **s.card)

    @router.post("/reports", response_model=ReportOut, responses=UPLOAD_ERRORS, openapi_extra=_REPORT_BODY,
                 summary="Draft a report from a frontal (and optional lateral) chest X-ray")
    async def reports(request: Request, s: ServicesDep) -> ReportOut:
        start = time.perf_counter()
        with s.worker.slot():  # bounds the uploads held in memory, not only the queue
            files = await read_images(request, s.max_bytes)
            views = {name: await run_in_threadpool(decode_upload, name, data, s.max_pixels)
                     for name, data in files.items()}
            del files  # the raw bytes are not needed past this point
            read_s = time.perf_counter() - start
            try:
                result = await s.worker.submit((views["frontal"], views.get("lateral")))
            except Exception as e:  # already logged with its traceback by the worker
                raise HTTPException(500, "report generation failed; see the server log") from e
            flagged = [v for v in result.output.get("ood") or [] if v["flag"]]
            if s.refuse_ood and flagged:
                raise HTTPException(422, f"{UNLIKE} ({', '.join(v['view'] for v in flagged)} view); "
                                         "this server writes no draft for such images")
            return await run_in_threadpool(_compose, s, views, result, read_s, start)

    @router.post("/simplify", response_model=SimplifyOut, responses={400: {"model": Problem}},
                 summary="Rewrite a report in plain language, checked against the original")
    def simplify(body: SimplifyIn, s: ServicesDep) -> SimplifyOut:
        simple = s.simplifier(body.report)
        return SimplifyOut(plain=simple.plain, guard=simple.guard, plain_note=simple.note)

    return router


_BINARY = {"type": "string", "format": "binary"}
# The body is parsed by hand (uploads must stay in memory), so its schema is declared here.
_REPORT_BODY = {"requestBody": {"required": True, "description": HOW_TO, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["frontal"], "additionalProperties": False,
               "properties": {"frontal": {**_BINARY, "description": "frontal view: PNG, JPEG or DICOM"},
                              "lateral": {**_BINARY, "description": "lateral view (optional)"}}}}}}}
