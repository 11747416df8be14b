"""Losses that use CLIP: symmetric InfoNCE with hard negatives, and the directional loss.

The directional loss is the paper's eqs 1-4 (after StyleGAN-NADA):
    dD1 = E_T(r) - E_I(x)          ground-truth report direction
    dD2 = E_T(M(x)) - E_I(x)       generated report direction
    L_dir = 1 - cos(dD1, dD2)
    L_total = L_CE + lambda * L_dir
The seed decoded M(x) with argmax into strings and ran CLIP under `.detach()`, so L_dir was
a constant with zero gradient. Here E_T(M(x)) is computed from the decoder's per-position
token distributions mapped into MiniLM's input-embedding space, so it is differentiable in
the decoder's logits.
"""
from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F
from torch import nn

from cxrgen.models.clip import CXRClip


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              negative_text_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE over a batch of matched pairs (row i of each is a pair).

    `negative_text_features` (M, D) are extra candidates for image->text only (NegCLIP-style
    hard negatives: the same report with one finding negated or its side flipped), so an image
    must prefer its report over a near-copy that says the opposite.
    """
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    candidates = text_features if negative_text_features is None else torch.cat([text_features, negative_text_features])
    logits_i2t = logit_scale * image_features @ candidates.T  # (B, B + M)
    logits_t2i = logit_scale * text_features @ image_features.T  # (B, B)
    loss = (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2
    return {"contrastive_loss": loss}


# --- hard negatives: negate one finding or flip its side -------------------------------------
_SIDE = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
# (pattern, replacement), tried in order on one sentence; the first that matches wins.
_NEGATE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b(there (?:is|are)) no (?:evidence of )?", re.I), r"\1 "),
    (re.compile(r"\bno (?:evidence of |definite |focal |acute |visible )?", re.I), ""),
    (re.compile(r"\bwithout\b", re.I), "with"),
    (re.compile(r"\bnegative for\b", re.I), "positive for"),
    (re.compile(r"\b(is|are) not\b", re.I), r"\1"),
    (re.compile(r"\b(is|are|appears?|remains?)\b(?! not)", re.I), r"\1 not"),
]
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+")


def flip_sides(sentence: str) -> str | None:
    """'left effusion' -> 'right effusion'; None when the sentence has no side."""
    out = re.sub(r"\b(left|right|Left|Right)\b", lambda m: _SIDE[m.group(1)], sentence)
    return out if out != sentence else None


def negate_sentence(sentence: str) -> str | None:
    """Flip a sentence's polarity with a rule ('No pneumothorax.' -> 'pneumothorax.'); None if no rule applies."""
    for pattern, repl in _NEGATE:
        out, n = pattern.subn(repl, sentence, count=1)
        if n:
            out = out.strip()
            return out[:1].upper() + out[1:] if out and out != sentence else None
    return None


def hard_negative(report: str, rng: random.Random | None = None) -> str | None:
    """The report with one sentence negated or side-flipped: near-identical text, opposite meaning.

    With `rng=None` the choice is deterministic (first sentence that a rule changes; side flip
    preferred), which is what the probe uses. Returns None when no rule applies.
    """
    sents = _SENT_SPLIT.split(report.strip())
    options = [(i, new) for edit in (flip_sides, negate_sentence) for i, s in enumerate(sents) if (new := edit(s))]
    if not options:
        return None
    i, new = rng.choice(options) if rng else options[0]
    return " ".join(sents[:i] + [new] + sents[i + 1:])


# --- the directional loss ---------------------------------------------------------------------
class DirectionalLoss(nn.Module):
    """L_dir = 1 - cos(E_T(r) - E_I(x), E_T(M(x)) - E_I(x)), differentiable in the decoder's logits.

    E_T(M(x)) is the frozen CLIP text tower applied to soft input embeddings: at each target
    position, the decoder's token distribution over the compact vocabulary (softmax(logits / tau),
    or a straight-through Gumbel-softmax sample) times the MiniLM word-embedding rows of those
    tokens (`minilm_ids`), after a [CLS] row. The CLIP stays frozen; only the generator learns.

    Args:
        clip: a trained CXRClip (its text tower is MiniLM, the decoder's token space).
        minilm_ids: (V,) compact token id -> MiniLM id (`ReportTokenizer.minilm_ids`).
        temperature: softmax temperature tau on the logits.
        gumbel: use hard straight-through Gumbel-softmax samples instead of the soft distribution.
    """

    def __init__(self, clip: CXRClip, minilm_ids: torch.Tensor, temperature: float = 1.0, gumbel: bool = False):
        super().__init__()
        self.clip = clip.requires_grad_(False).eval()
        self.register_buffer("minilm_ids", minilm_ids.long(), persistent=False)
        self.temperature = temperature
        self.gumbel = gumbel
        self.cls_id = clip.tokenizer.cls_token_id

    def train(self, mode: bool = True) -> DirectionalLoss:
        super().train(mode)
        self.clip.eval()  # frozen: no dropout in the reference embeddings
        return self

    def text_embedding(self, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, V) token distributions over the compact vocab + (B, T) mask -> (B, D) unit CLIP text embeddings."""
        words = self.clip.text.word_embeddings  # (V_minilm, H)
        embeds = probs.to(words.dtype) @ words[self.minilm_ids]  # (B, T, H) expected word embeddings
        cls = words[self.cls_id].expand(probs.shape[0], 1, -1)  # (B, 1, H)
        embeds = torch.cat([cls, embeds], dim=1)
        attn = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1).long()
        return self.clip.encode_text(inputs_embeds=embeds, attention_mask=attn)

    @torch.no_grad()
    def report_embedding(self, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """E_T(r) through the same soft path with one-hot targets (equals encoding the ids)."""
        onehot = F.one_hot(targets, num_classes=self.minilm_ids.numel()).float()
        return self.text_embedding(onehot, mask)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, image_emb: torch.Tensor,
                report_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Args: teacher-forced logits (B, T, V) for `targets` (B, T) [the report after BOS, ending in EOS],
        `mask` (B, T) true on real tokens, `image_emb` E_I(x) (B, D) and optionally a cached E_T(r) (B, D)."""
        if logits.shape[:2] != targets.shape or targets.shape != mask.shape:
            raise ValueError(f"shape mismatch: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
                             f"mask {tuple(mask.shape)}")
        if self.gumbel:
            probs = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True)
        else:
            probs = F.softmax(logits.float() / self.temperature, dim=-1)
        probs = probs * mask.unsqueeze(-1)  # padding positions carry no mass (and no gradient)
        generated = self.text_embedding(probs, mask)
        if report_emb is None:
            report_emb = self.report_embedding(targets * mask, mask)
        d1 = report_emb - image_emb  # eq 1
        d2 = generated - image_emb  # eq 2
        return (1 - F.cosine_similarity(d1, d2, dim=-1)).mean()  # eq 3


class DirectionalHook:
    """`extra_losses` hook for cxrgen.train.GeneratorModule: adds lambda * L_dir (eq 4).

    The loss is built at the first call from `module.tokenizer.minilm_ids` (the compact
    vocabulary exists only once training has built it). E_I(x) and E_T(r) are constants
    (frozen CLIP): image embeddings come from `image_emb` by study id (required when the batch
    holds cached encoder features instead of images), and E_T(r) is computed once per study and
    cached, so later epochs pay only for the differentiable E_T(M(x)).

    Both are kept in tables on the training device, one row per study, and each step gathers
    its rows with one small index copy: no per-step stacking on the CPU and no host sync.

    Args:
        clip: a trained CXRClip, frozen here.
        weight: lambda.
        image_emb: {study id: E_I(x)} precomputed with the CLIP's own image pipeline.
        row_fraction: fraction of each batch's rows that get L_dir (a random subset, an unbiased
            estimate of the batch mean) to bound the MiniLM cost per step.
    """

    def __init__(self, clip: CXRClip, weight: float, image_emb: dict[str, torch.Tensor] | None = None,
                 temperature: float = 1.0, gumbel: bool = False, row_fraction: float = 1.0):
        if not 0 < row_fraction <= 1:
            raise ValueError(f"row_fraction must be in (0, 1], got {row_fraction}")
        self.clip, self.weight, self.temperature, self.gumbel = clip, weight, temperature, gumbel
        image_emb = dict(image_emb or {})
        self.row = {sid: i for i, sid in enumerate(image_emb)}  # study id -> table row
        self.n_image_emb = len(image_emb)  # rows below this have an E_I(x) in image_table
        self.image_table = torch.stack(list(image_emb.values())) if image_emb else None  # (n, D)
        self.report_table = torch.zeros(len(image_emb), clip.cfg.embed_dim)  # E_T(r) (n, D), row filled once
        self.embedded: set[str] = set()  # studies whose E_T(r) row is filled
        self.row_fraction = row_fraction
        self.loss: DirectionalLoss | None = None

    def _table_rows(self, ids: list[str]) -> list[int]:
        for sid in ids:  # studies without a precomputed E_I(x) (fine-tuning on images) get new rows
            self.row.setdefault(sid, len(self.row))
        if len(self.row) > len(self.report_table):  # grow by doubling: rare, and never with a full image_emb
            extra = max(len(self.row), 2 * len(self.report_table)) - len(self.report_table)
            self.report_table = torch.cat([self.report_table, self.report_table.new_zeros(extra, self.report_table.shape[1])])
        return [self.row[s] for s in ids]

    def __call__(self, module: nn.Module, batch: dict, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        dev = logits.device
        if self.loss is None:
            self.loss = DirectionalLoss(self.clip, module.tokenizer.minilm_ids, self.temperature, self.gumbel)
        self.loss.to(dev)
        rows = list(range(logits.shape[0]))
        if self.row_fraction < 1:
            k = max(1, round(self.row_fraction * len(rows)))
            rows = torch.randperm(len(rows))[:k].sort().values.tolist()  # on the CPU: no sync
        ids = [batch["study_id"][i] for i in rows]
        has_image_emb = all(self.row.get(s, self.n_image_emb) < self.n_image_emb for s in ids)
        if not has_image_emb and "image" not in batch:
            missing = next(s for s in ids if self.row.get(s, self.n_image_emb) >= self.n_image_emb)
            raise KeyError(f"no CLIP image embedding for study {missing} and no images in the batch "
                           "(cached-feature training needs precomputed image_emb)")
        index = torch.tensor([rows, self._table_rows(ids)])  # (2, k): batch rows, table rows
        index = (index.pin_memory() if dev.type == "cuda" else index).to(dev, non_blocking=True)
        sel, table_rows = index
        self.report_table = self.report_table.to(dev)
        # logits[:, t] predicts report_ids[:, t + 1]; batches are padded to their longest report (and
        # length-bucketed), and padded columns carry no mass, so nothing is trimmed here
        targets, mask, logits = batch["report_ids"][sel, 1:], batch["report_mask"][sel, 1:].bool(), logits[sel]
        todo = [j for j, s in enumerate(ids) if s not in self.embedded]
        if todo:  # first sight of these studies (the first epoch): E_T(r) into their rows
            j = torch.tensor(todo, device=dev)
            self.report_table[table_rows[j]] = self.loss.report_embedding(targets[j] * mask[j], mask[j])
            self.embedded.update(ids[i] for i in todo)
        rep = self.report_table[table_rows]
        if has_image_emb:
            self.image_table = self.image_table.to(dev)
            img = self.image_table[table_rows]
        else:
            with torch.no_grad():  # (B, views, 1, H, W) uint8, frontal first
                img = self.loss.clip.encode_image(batch["image"][sel, 0].float() / 255)
        return {"directional_loss": self.weight * self.loss(logits, targets, mask, img, rep)}


def build_directional_hook(clip_dir: str, weight: float, studies: list | None = None, temperature: float = 1.0,
                           gumbel: bool = False, row_fraction: float = 1.0) -> DirectionalHook:
    """Load a `cxrgen clip train` checkpoint and wrap it as an `extra_losses` hook.

    `studies`: the training/validation studies, whose frontal images are embedded once here
    (needed when the generator trains on cached encoder features).
    """
    from cxrgen.errors import UserError
    from cxrgen.models.clip import load_clip
    from cxrgen.retrieval import embed_study_images

    clip = load_clip(clip_dir)
    if not isinstance(clip, CXRClip):
        raise UserError(f"{clip_dir}: the directional loss needs a MiniLM-text CLIP from `cxrgen clip train` "
                        "(external CLIPs use a BPE vocabulary the decoder does not share; use them for retrieval/SCST)")
    image_emb = {}
    if studies:
        ids, emb = embed_study_images(clip, studies)
        image_emb = dict(zip(ids, emb))
    return DirectionalHook(clip, weight, image_emb, temperature, gumbel, row_fraction)


def hooks_from_config(cfg, studies: list) -> list:
    """The `extra_losses` hooks that a config's `loss` section (cxrgen.config.LossConfig) asks for; none by default.

    `studies`: those the generator trains and validates on (their images are embedded once by the CLIP).
    """
    from cxrgen.errors import UserError

    if not (cfg.directional_weight or cfg.scst_weight):
        return []
    if not cfg.clip and (cfg.directional_weight or cfg.reward_clip):
        raise UserError("loss.directional_weight and SCST's CLIP reward (loss.reward_clip) need loss.clip: a "
                        "`cxrgen clip train` folder (set it with --set loss.clip=DIR)")
    hooks = []
    if cfg.directional_weight:
        hooks.append(build_directional_hook(cfg.clip, cfg.directional_weight, studies, cfg.directional_temperature,
                                            row_fraction=cfg.row_fraction))
    if cfg.scst_weight:
        from cxrgen.scst import RewardWeights, build_scst_hook

        weights = RewardWeights(cfg.reward_clip, cfg.reward_cider, cfg.reward_ce_f1)
        hooks.append(build_scst_hook(cfg.clip, cfg.scst_weight, studies, weights, cfg.scst_max_len))
    return hooks
