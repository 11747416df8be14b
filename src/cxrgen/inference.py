"""Inference: a trained checkpoint turns images into reports.

`ReportGenerator` wraps a model with its tokenizer and config (numpy images in; report, finding
probabilities and attention map out): the web server and `cxrgen generate --image` call it.
`generate_for_studies` is the one loop from `Study` records to reports, with the unreadable-image
skip and a progress bar, for every caller that writes reports for a dataset. Every result carries
the out-of-distribution verdict of `cxrgen.ood` (None for a checkpoint without training statistics);
`pooled_features` and `study_images` feed `OODStats.fit` when statistics are computed.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxrgen.checkpoint import load_checkpoint
from cxrgen.config import Config
from cxrgen.data.images import ImageError, load_image, resize
from cxrgen.data.reports import PLACEHOLDER
from cxrgen.data.studies import Study
from cxrgen.bank import ReportBank, finding_set, statable
from cxrgen.decoding import generate
from cxrgen.extras import ExtraFindings, study_features
from cxrgen.labeler import CONDITIONS, extra_findings, label_many
from cxrgen.models.generator import ReportModel
from cxrgen.ood import OODStats, pool
from cxrgen.precision import autocast, bf16_is_fast
from cxrgen.sides import SideModel, side_features, stated_sides

_logger = logging.getLogger(__name__)


def views_to_tensor(frontals: list[np.ndarray], laterals: list[np.ndarray | None], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 grey (or RGB) arrays -> (images (B, 2, 1, size, size) in [0, 1], view_mask (B, 2))."""

    def prep(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim == 3:  # RGB(A) upload: the model reads grey
            a = a[..., :3].mean(-1)
        if a.ndim != 2:
            raise ValueError(f"expected an HxW image, got shape {a.shape}")
        return resize(a.astype(np.uint8), size)

    if len(frontals) != len(laterals):
        raise ValueError("frontals and laterals must have the same length (None for a missing lateral)")
    out = np.zeros((len(frontals), 2, 1, size, size), np.uint8)
    mask = np.zeros((len(frontals), 2), bool)
    for i, (f, lat) in enumerate(zip(frontals, laterals)):
        out[i, 0, 0], mask[i, 0] = prep(f), True
        if lat is not None:
            out[i, 1, 0], mask[i, 1] = prep(lat), True
    return torch.from_numpy(out).float().div_(255), torch.from_numpy(mask)


def agreement(said: frozenset[str], called: frozenset[str]) -> float:
    """F1 between the observations the labeler reads in a text (`said`: present or uncertain, No
    Finding included) and `called` (1 when both are empty)."""
    return 1.0 if not said and not called else 2 * len(said & called) / (len(said) + len(called))


def present(labels) -> frozenset[str]:
    """The observations a text states as present (the labeler's 1), not hedged: what CheXpert-style
    clinical efficacy counts, and what the classifier's calls, trained on them, mean."""
    return frozenset(c for c in CONDITIONS if labels.get(c) == 1)


def refused(ood: list[dict]) -> dict:
    """The result for a study that is not decoded because a view is flagged as unlike the training images."""
    return {"report": None, "probabilities": None, "calls": None, "sides": None, "extras": None, "unstated": None,
            "uncalled": None, "attention": None, "ood": ood}


class ReportGenerator:
    """Inference wrapper: numpy images in, report + finding probabilities + attention map out."""

    def __init__(self, model: ReportModel, tokenizer, config: Config, device: str | torch.device = "cpu",
                 ood: OODStats | None = None, meta: dict | None = None, bank: ReportBank | None = None,
                 sides: SideModel | None = None, extras: ExtraFindings | None = None, bf16: bool | None = None):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = torch.device(device)
        self.ood = ood  # None: results carry "ood": None (no verdict)
        self.meta = meta or {}
        self.bank = bank  # None: reranking chooses among the decoder's own beams only
        self.sides = sides  # None: reranking ignores where the findings are
        self.extras = extras  # None: reranking ignores findings outside the 14
        # the encoder and the decoder under bfloat16 autocast where it is native (None: cxrgen.precision decides)
        self.bf16 = bf16_is_fast(self.device) if bf16 is None else bf16
        self._bank_cache: dict[str, tuple] = {}  # bank text -> `_bank_entry`

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> ReportGenerator:
        model, tokenizer, config, meta = load_checkpoint(directory)
        return cls(model, tokenizer, config, device, OODStats.load(directory, meta), meta, ReportBank.load(directory),
                   SideModel.load(directory), ExtraFindings.load(directory))

    @torch.inference_mode()  # not just no_grad: skipping autograd's version counters makes one beam-3 report 1.3x faster
    def generate_batch(self, frontals: list[np.ndarray], laterals: list[np.ndarray | None] | None = None,
                       beam_size: int | None = None, max_len: int | None = None,
                       length_penalty: float | None = None, rerank: bool | None = None,
                       return_attention: bool = True, skip_flagged: bool = False) -> list[dict]:
        """One dict per study: {"report", "probabilities": {condition: p}, "calls": [condition, ...],
        "sides": {condition: side}, "extras": {finding: p}, "unstated": [...], "uncalled": [...],
        "attention": (h, w) array or None, "ood": [{"view", "score", "threshold", "flag"}, ...] or None}.

        `calls` are the conditions the classifier calls present at its tuned thresholds (what the
        decoder's label states say); `sides`, for the called findings that have a side model
        (`cxrgen.sides`), the side the image shows them on ("left", "right", "bilateral"); `extras`, the
        probability of each finding outside the 14 that the model reads (`cxrgen.extras`; called at 0.5,
        empty without those models). Where draft and calls disagree, `unstated` lists the called findings
        that the draft does not state, `uncalled` the findings the draft states (present or uncertain, by
        the labeler) that the classifier does not call; No Finding counts as one of the 14 in both.
        The attention map is the last decoder layer's cross-attention over the frontal view's patches,
        averaged over heads and generated tokens, scaled to max 1. `ood` has one verdict per view given
        (frontal first), None when the checkpoint has no training statistics. With
        `skip_flagged`, a study with a flagged view is not decoded: its dict is `refused(ood)`, report None.
        """
        laterals = laterals if laterals is not None else [None] * len(frontals)
        images, view_mask = views_to_tensor(frontals, laterals, self.config.model.image_size)
        images, view_mask = images.to(self.device), view_mask.to(self.device)
        with autocast(self.device, self.bf16):
            tokens = self.model.encode_views(images, view_mask).float()
        verdicts = self.ood.verdicts(pool(tokens), view_mask) if self.ood is not None else [None] * len(frontals)
        skip = [skip_flagged and any(v["flag"] for v in verdict or []) for verdict in verdicts]
        keep = [i for i, s in enumerate(skip) if not s]
        if len(keep) < len(skip):  # the verdict needs only the encoder: decode the others alone
            tokens, view_mask = tokens[keep], view_mask[keep]
        drafts = iter(self._decode(tokens, view_mask, beam_size, max_len, length_penalty, rerank, return_attention)
                      if keep else [])
        return [refused(verdict) if s else {**next(drafts), "ood": verdict} for s, verdict in zip(skip, verdicts)]

    def _decode(self, tokens: torch.Tensor, view_mask: torch.Tensor, beam_size: int | None, max_len: int | None,
                length_penalty: float | None, rerank: bool | None, return_attention: bool) -> list[dict]:
        """Encoder tokens (B, 2, N, C) -> each study's report, probabilities, calls and attention."""
        memory = self.model.memory_from_features(tokens, view_mask)
        dc = self.config.decode
        with autocast(self.device, self.bf16):
            out = generate(self.model.decoder, memory, self.tokenizer.bos_id, self.tokenizer.eos_id,
                           beam_size=beam_size or dc.beam_size, max_len=max_len or dc.max_len,
                           length_penalty=dc.length_penalty if length_penalty is None else length_penalty,
                           no_repeat_ngram=dc.no_repeat_ngram, return_attention=return_attention,
                           allowed=self.tokenizer.allowed_next)
        probs = torch.sigmoid(memory.cls_logits).cpu().numpy()
        called = self.model.predicted_states(memory.cls_logits).bool().cpu().numpy()
        sides = (self.sides.predict(side_features(tokens[:, 0].cpu())) if self.sides is not None
                 else [{} for _ in called])
        sides = [{c: side for c, side in where.items() if row[CONDITIONS.index(c)]} for where, row in zip(sides, called)]
        extras = (self.extras.probabilities(study_features(tokens.cpu())) if self.extras is not None
                  else [{} for _ in called])
        sequences = out.sequences
        if dc.rerank if rerank is None else rerank:
            sequences = self._rerank(out.candidates or [[seq] for seq in sequences], called, sides,
                                     [ExtraFindings.calls(p, abnormal=not row.any()) for p, row in zip(extras, called)])
        reports = [self.tokenizer.decode(ids) for ids in sequences]
        results = []
        for i, (report, labels) in enumerate(zip(reports, label_many(reports))):
            att = None  # the top beam's, also when reranking kept another
            if out.attention is not None:
                side = math.isqrt(memory.n_patches)
                a = out.attention[i, memory.prefix:memory.prefix + memory.n_patches].float().cpu().numpy()
                att = (a / max(a.max(), 1e-12)).reshape(side, side).astype(np.float32)
            calls = [c for c, on in zip(CONDITIONS, called[i]) if on]
            stated = finding_set(labels, no_finding=True)
            results.append({"report": report,
                            "probabilities": {c: float(p) for c, p in zip(CONDITIONS, probs[i])},
                            "calls": calls,
                            "sides": sides[i],
                            "extras": extras[i],
                            "unstated": [c for c in calls if c not in stated],
                            "uncalled": [c for c in CONDITIONS if c in stated and c not in calls],
                            "attention": att})
        return results

    @property
    def bank(self) -> ReportBank | None:
        return self._bank

    @bank.setter
    def bank(self, bank: ReportBank | None) -> None:
        self._bank = bank
        self._plans: dict[tuple[frozenset[str], frozenset[str]], list] = {}  # (calls, extras) -> bank candidates

    def _rerank(self, beams: list[list[list[int]]], called: np.ndarray, sides: list[dict[str, str]],
                extras: list[frozenset[str]]) -> list[list[int]]:
        """Per study, the candidate whose findings agree best with the classifier's calls (`agreement`), a
        draft without a de-identification placeholder ("XXXX") before one with; among equals, the one that
        states the calls as present rather than hedged ("possible atelectasis"): a call means present,
        as the classifier learnt it; then the one that puts more called findings on the side that the
        side models read (`sides`); then the one whose findings outside the 14 agree best with those
        the image is read to show (`extras`, `cxrgen.extras`). Candidates: with a bank, its `plan` for the
        calls (`statable`: No Finding yields to a called pathology) and the `extras`, most typical first,
        then the decoder's beams, best first; the first of the equals wins. So the bank's most typical
        wording breaks ties: it matched the references' wording better on validation data than the
        decoder's own preference among the tied reports (docs/results.md)."""
        room = self.model.decoder.cfg.max_len - 1  # positions for the report and its EOS
        fits = lambda text: len(self._bank_entry(text)[0]) < room
        read = self.extras.findings if self.extras is not None else frozenset()
        chosen = []
        for beam, row, where, shown in zip(beams, called, sides, extras):
            wanted = statable(frozenset(c for c, on in zip(CONDITIONS, row) if on))
            cands = []
            if self.bank is not None:
                if (wanted, shown) not in self._plans:
                    self._plans[wanted, shown] = [c for c in map(self._bank_entry, self.bank.plan(wanted, fits, shown, read))
                                                  if len(c[0]) < room]
                cands = list(self._plans[wanted, shown])
            texts = [self.tokenizer.decode(seq) for seq in beam]
            cands += [(seq, not PLACEHOLDER.search(t), finding_set(lab, no_finding=True), present(lab), stated_sides(t),
                       extra_findings(t)) for seq, t, lab in zip(beam, texts, label_many(texts))]
            keys = [(clean, agreement(said, wanted), agreement(sure, wanted),
                     sum(placed.get(c) == side for c, side in where.items()), agreement(other & read, shown))
                    for _, clean, said, sure, placed, other in cands]
            chosen.append(cands[max(range(len(cands)), key=keys.__getitem__)][0])  # max: the first of the equals
        return chosen

    def _bank_entry(self, text: str) -> tuple[list[int], bool, frozenset, frozenset, dict[str, str], frozenset]:
        """A bank text's token ids (no BOS, EOS), whether it is free of "XXXX", and what the labeler reads
        in it as the decoder would write it: present or uncertain, present only, the sides and the findings
        outside the 14 (cached: the bank's texts recur for every study)."""
        if text not in self._bank_cache:
            ids = self.tokenizer.encode(text)[1:-1]
            written = self.tokenizer.decode(ids)
            labels = label_many([written])[0]
            self._bank_cache[text] = (ids, not PLACEHOLDER.search(written), finding_set(labels, no_finding=True),
                                      present(labels), stated_sides(written), extra_findings(written))
        return self._bank_cache[text]

    def generate(self, frontal: np.ndarray, lateral: np.ndarray | None = None, **kwargs) -> dict:
        """Single study; same keyword arguments and result as `generate_batch`."""
        return self.generate_batch([frontal], [lateral], **kwargs)[0]


def generate_for_studies(gen: ReportGenerator, studies: list[Study], batch_size: int = 16,
                         **decode) -> Iterator[tuple[Study, dict | None]]:
    """(study, result) for every study in order, decoded `batch_size` at a time; `decode` as for
    `generate_batch`. A study whose image cannot be read gets result None (warned), not an exception:
    one bad file must not abort a whole split."""
    size = gen.config.model.image_size
    with tqdm(total=len(studies), desc="generating", unit="study", disable=None) as bar:
        for start in range(0, len(studies), batch_size):
            chunk = studies[start:start + batch_size]
            readable, fronts, lats = [], [], []
            for s in chunk:
                try:
                    if s.frontal is None or s.frontal.path is None:
                        raise ImageError("no frontal image")
                    front = load_image(s.frontal.path, size)
                    lats.append(load_image(s.lateral.path, size) if s.lateral and s.lateral.path else None)
                    fronts.append(front)
                    readable.append(s)
                except ImageError as e:
                    _logger.warning("skipping study %s: %s", s.id, e)
            results = iter(gen.generate_batch(fronts, lats, return_attention=False, **decode) if readable else [])
            ok = {s.id for s in readable}
            for s in chunk:
                yield s, next(results) if s.id in ok else None
            bar.update(len(chunk))


@torch.inference_mode()
def pooled_features(model: ReportModel, pairs: Iterable[tuple[np.ndarray, np.ndarray | None]], batch_size: int = 32,
                    device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(frontal, lateral or None) uint8 images -> each view's pooled encoder features (n, 2, C) float32
    (what `cxrgen.ood` scores) and the view mask (n, 2)."""
    model = model.to(device).eval()
    feats, masks, batch = [], [], []

    def flush() -> None:
        images, mask = views_to_tensor([f for f, _ in batch], [lat for _, lat in batch], model.cfg.image_size)
        with autocast(device):  # as `ReportGenerator` reads images on this device
            tokens = model.encode_views(images.to(device), mask.to(device)).float()
        feats.append(pool(tokens).cpu().numpy())
        masks.append(mask.numpy())
        batch.clear()

    for pair in pairs:
        batch.append(pair)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not feats:
        return np.zeros((0, 2, 0), np.float32), np.zeros((0, 2), bool)
    return np.concatenate(feats), np.concatenate(masks)


def study_images(studies: list[Study], size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(frontal, lateral or None) of each study whose frontal decodes, with a progress bar; a study
    whose frontal cannot be read is left out, an unreadable lateral counts as absent."""
    for s in tqdm(studies, desc="encoding images", unit="study", disable=None):
        try:
            if s.frontal is None or s.frontal.path is None:
                continue
            front = load_image(s.frontal.path, size)
        except ImageError:
            continue
        try:
            lat = load_image(s.lateral.path, size) if s.lateral is not None and s.lateral.path else None
        except ImageError:
            lat = None
        yield front, lat


def calibrate(model: ReportModel, train: Iterable, val: Iterable, quantile: float, batch_size: int = 32,
              device: str | torch.device = "cpu") -> OODStats:
    """Training statistics from the training and validation images ((frontal, lateral) pairs)."""
    xt, mt = pooled_features(model, train, batch_size, device)
    xv, mv = pooled_features(model, val, batch_size, device)
    return OODStats.fit(xt, mt, xv, mv, quantile)
