"""Retrieval in CLIP space: the CXR-RePaiR baseline, recall@K, and the negation probe.

CXR-RePaiR (Endo et al., 2021) writes a report by retrieving, for a query image, the training
report (or the top-k training sentences) whose CLIP text embedding is most similar to the
image's CLIP embedding. It needs no decoder, so it is the natural "what does CLIP alone know"
baseline for the directional loss.
"""
from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from cxrgen.data.images import ImageError, load_image
from cxrgen.data.reports import hard_negative, split_sentences
from cxrgen.data.specs import load_studies
from cxrgen.data.studies import Study
from cxrgen.errors import UserError
from cxrgen.models.clip import ClipModel

_logger = logging.getLogger(__name__)


def embed_study_images(clip: ClipModel, studies: list[Study], batch_size: int = 32) -> tuple[list[str], torch.Tensor]:
    """CLIP embeddings of each study's frontal image; studies without a readable one are skipped (warned)."""
    size, ids, out, batch = clip.image_size, [], [], []
    for s in tqdm(studies, desc="embedding images", unit="study", disable=None):
        try:
            if s.frontal is None or s.frontal.path is None:
                raise ImageError("no frontal image")
            batch.append(load_image(s.frontal.path, size))
            ids.append(s.id)
        except ImageError as e:
            _logger.warning("skipping study %s: %s", s.id, e)
        if len(batch) == batch_size:
            out.append(clip.encode_images(batch))
            batch = []
    if batch:
        out.append(clip.encode_images(batch))
    return ids, (torch.cat(out) if out else torch.zeros(0, 1))


def retrieve_reports(clip: ClipModel, studies_train: list[Study], studies_query: list[Study], k: int = 1,
                     unit: str = "report") -> dict[str, str]:
    """For every query study, the nearest training findings in CLIP space.

    Args:
        clip: any CLIP from `cxrgen.models.clip.load_clip`.
        studies_train: the retrieval corpus (their findings text; empty findings are ignored).
        studies_query: studies to write reports for (frontal image used).
        k: with unit="sentence", how many distinct sentences to concatenate (most similar first).
        unit: "report" (nearest whole training report) or "sentence" (CXR-RePaiR-Select-like top-k sentences).

    Returns:
        {study id: report text}, the same content `cxrgen generate` writes as JSONL.
    """
    if unit not in ("report", "sentence"):
        raise ValueError(f"unit must be 'report' or 'sentence', got {unit!r}")
    reports = [s.findings.strip() for s in studies_train if s.findings.strip()]
    if unit == "sentence":
        corpus = list(dict.fromkeys(x for r in reports for x in split_sentences(r)))
    else:
        corpus = list(dict.fromkeys(reports))
    if not corpus:
        raise ValueError("the retrieval corpus is empty: no training study has findings text")
    text_emb = clip.embed_texts(corpus)  # (N, D)
    ids, img_emb = embed_study_images(clip, studies_query)
    out = {}
    for sid, sims in zip(ids, img_emb @ text_emb.T):
        if unit == "report":
            out[sid] = corpus[int(sims.argmax())]
        else:
            out[sid] = " ".join(corpus[i] for i in sims.topk(min(k, len(corpus))).indices.tolist())
    return out


def retrieve_split(clip: ClipModel, data: str, split: str, k: int = 1) -> dict[str, str]:
    """`retrieve_reports` for every study of one split of a dataset spec, from its training split:
    the nearest training report (k=1) or the top-k training sentences."""
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    return retrieve_reports(clip, load_studies(data, "train"), load_studies(data, split), k=k,
                            unit="sentence" if k > 1 else "report")


def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Image->text and text->image recall@K for matched rows (row i of each is one study)."""
    sims = image_emb @ text_emb.T  # (N, N)
    target = torch.arange(sims.shape[0]).unsqueeze(1)
    out = {}
    for name, s in (("i2t", sims), ("t2i", sims.T)):
        rank = (s.argsort(dim=1, descending=True) == target).float().argmax(dim=1)  # 0 = retrieved first
        for k in ks:
            out[f"{name}_R@{k}"] = float((rank < k).float().mean())
    return out


# Template pairs for the text-side probe: each finding stated, negated, and (where it has a side) flipped.
PROBE_FINDINGS = ["pleural effusion", "pneumothorax", "focal consolidation", "pulmonary edema", "cardiomegaly",
                  "pneumonia", "atelectasis", "a nodule", "a rib fracture", "an opacity"]


def probe_pairs() -> list[tuple[str, str]]:
    """(sentence, opposite) pairs: 'There is X.' / 'There is no X.', and left/right flips."""
    pairs = []
    for f in PROBE_FINDINGS:
        bare = f.removeprefix("a ").removeprefix("an ")
        pairs.append((f"There is {f}.", f"There is no {bare}."))
        pairs.append((f"{bare.capitalize()} is present.", f"No {bare}."))
        pairs.append((f"There is {f} on the left.", f"There is {f} on the right."))
    return pairs


def negation_probe(clip: ClipModel, reports: list[str] | None = None, image_emb: torch.Tensor | None = None) -> dict:
    """How well the text space separates a statement from its opposite.

    Returns:
        template_cos: mean cosine between a template sentence and its negation/side flip (lower is better;
            untrained MiniLM ~0.7-0.97).
        report_cos: mean cosine between a report and its hard negative (`cxrgen.data.reports.hard_negative`).
        image_prefers_true: with image embeddings of the reports' studies, the fraction of studies whose
            image is closer to its own report than to the report's hard negative (0.5 = blind to polarity).
    """
    a, b = zip(*probe_pairs())
    out = {"template_cos": float((clip.embed_texts(list(a)) * clip.embed_texts(list(b))).sum(-1).mean()),
           "template_pairs": len(a)}
    if reports:
        keep = [(i, r, n) for i, r in enumerate(reports) if (n := hard_negative(r))]
        if keep:
            idx, pos, neg = zip(*keep)
            ep, en = clip.embed_texts(list(pos)), clip.embed_texts(list(neg))
            out["report_cos"] = float((ep * en).sum(-1).mean())
            out["report_pairs"] = len(keep)
            if image_emb is not None:
                im = image_emb[list(idx)]
                out["image_prefers_true"] = float(((im * ep).sum(-1) > (im * en).sum(-1)).float().mean())
    return out
