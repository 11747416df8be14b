"""Training signals beyond cross-entropy, as `extra_losses` hooks of `GeneratorModule`.

A hook is called as hook(module, batch, logits) and returns {name_loss: tensor}, added to the
total. Two use a CLIP:
- `DirectionalHook`: lambda * L_dir, the paper's directional loss (`cxrgen.losses.DirectionalLoss`),
  differentiable through soft tokens.
- `SCSTHook`: self-critical sequence training (Rennie et al., 2017). It samples real reports and
  pushes up the log-probability of samples that score better than the model's own greedy decode
  (the baseline), so the reward can be any function of strings:
    reward = w_clip * cos(E_T(sample) - E_I(x), E_T(r) - E_I(x))    (the directional similarity)
           + w_cider * CIDEr-D(sample, r) + w_ce * CheXpert-label F1(sample, r)
    loss   = -(reward(sample) - reward(greedy)) * log p(sample)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrgen.config import LossConfig
from cxrgen.decoding import greedy, sample
from cxrgen.errors import UserError
from cxrgen.evaluate.clinical import sample_f1
from cxrgen.evaluate.nlg import cider
from cxrgen.losses import DirectionalLoss
from cxrgen.models.clip import ClipModel, CXRClip, load_clip
from cxrgen.retrieval import embed_study_images
from cxrgen.training.module import batch_memory


class DirectionalHook:
    """`extra_losses` hook for GeneratorModule: adds lambda * L_dir (eq 4).

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
            emb = self.loss.report_embedding(targets[j] * mask[j], mask[j])  # bfloat16 under bf16 autocast
            self.report_table[table_rows[j]] = emb.to(self.report_table.dtype)
            self.embedded.update(ids[i] for i in todo)
        rep = self.report_table[table_rows]
        if has_image_emb:
            self.image_table = self.image_table.to(dev)
            img = self.image_table[table_rows]
        else:
            with torch.no_grad():  # (B, views, 1, H, W) uint8, frontal first
                img = self.loss.clip.encode_image(batch["image"][sel, 0].float() / 255)
        return {"directional_loss": self.weight * self.loss(logits, targets, mask, img, rep)}


# --- self-critical sequence training ---------------------------------------------------------
@dataclass
class RewardWeights:
    clip: float = 1.0  # directional similarity in CLIP space
    cider: float = 0.0  # CIDEr-D against the reference (document frequencies from the batch's references)
    ce_f1: float = 0.0  # F1 of the labeler's positive findings, sample vs reference


class Reward:
    """Per-sample reward of generated texts against references, for one batch of studies."""

    def __init__(self, clip: ClipModel | None, weights: RewardWeights | None = None):
        self.clip, self.w = clip, weights or RewardWeights()
        if self.w.clip and clip is None:
            raise ValueError("a CLIP reward weight needs a CLIP model")

    @torch.no_grad()
    def __call__(self, texts: list[str], refs: list[str], image_emb: torch.Tensor | None = None,
                 ref_emb: torch.Tensor | None = None) -> torch.Tensor:
        """image_emb (B, D) E_I(x) and ref_emb (B, D) E_T(r) are read only with a CLIP weight."""
        r = torch.zeros(len(texts))
        if self.w.clip:
            gen = self.clip.embed_texts(texts).cpu()
            ref = self.clip.embed_texts(refs).cpu() if ref_emb is None else ref_emb.cpu()
            img = image_emb.cpu()
            r += self.w.clip * F.cosine_similarity(gen - img, ref - img, dim=-1)
        if self.w.cider:
            r += self.w.cider * torch.as_tensor(cider(texts, refs), dtype=torch.float32)
        if self.w.ce_f1:
            r += self.w.ce_f1 * torch.as_tensor(sample_f1(texts, refs), dtype=torch.float32)
        return r


class SCSTHook:
    """`extra_losses` hook for GeneratorModule: adds weight * SCST loss.

    Memory is rebuilt from the batch (cached features or images); E_I(x) comes from
    `image_emb` by study id, E_T(r) is cached per study after its first use.
    """

    def __init__(self, reward: Reward, weight: float, image_emb: dict[str, torch.Tensor], max_len: int = 100,
                 temperature: float = 1.0):
        self.reward, self.weight, self.image_emb = reward, weight, image_emb
        self.max_len, self.temperature = max_len, temperature
        self.ref_emb: dict[str, torch.Tensor] = {}

    def __call__(self, module: nn.Module, batch: dict, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        tok, ids = module.tokenizer, batch["study_id"]
        memory = batch_memory(module.model, batch)
        samples, logp = sample(module.model.decoder, memory, tok.bos_id, tok.eos_id, self.max_len, self.temperature)
        was_training = module.model.training
        module.model.eval()  # the baseline is the deterministic greedy decode
        base = greedy(module.model.decoder, memory, tok.bos_id, tok.eos_id, self.max_len).sequences
        module.model.train(was_training)
        refs = [tok.decode(r) for r in batch["report_ids"].tolist()]
        todo = [i for i, s in enumerate(ids) if s not in self.ref_emb]
        if todo and self.reward.w.clip:
            for i, e in zip(todo, self.reward.clip.embed_texts([refs[i] for i in todo]).cpu()):
                self.ref_emb[ids[i]] = e
        ref_emb = torch.stack([self.ref_emb[s] for s in ids]) if self.reward.w.clip else None
        img = torch.stack([self.image_emb[s] for s in ids]) if self.reward.w.clip else None
        r_sample = self.reward([tok.decode(s) for s in samples.tolist()], refs, img, ref_emb)
        r_greedy = self.reward([tok.decode(s) for s in base], refs, img, ref_emb)
        advantage = (r_sample - r_greedy).to(logp.device)
        loss = -(advantage * logp).mean()
        return {"scst_loss": self.weight * loss, "scst_reward": r_sample.mean().to(logp.device)}


def hooks_from_config(cfg: LossConfig, studies: list, clip: ClipModel | None = None,
                      image_emb: dict[str, torch.Tensor] | None = None) -> list:
    """The `extra_losses` hooks that a config's `loss` section asks for; none by default.

    `studies`: those the generator trains and validates on, whose frontal images the CLIP embeds
    once. An experiment that shares one CLIP between runs passes it as `clip`, with `image_emb`
    ({study id: E_I(x)}); otherwise the CLIP is loaded from `loss.clip` and the images embedded here.
    SCST with only CIDEr or label-F1 rewards needs no CLIP and loads none.
    """
    if not (cfg.directional_weight or cfg.scst_weight):
        return []
    reward = RewardWeights(cfg.reward_clip, cfg.reward_cider, cfg.reward_ce_f1)
    needs_clip = bool(cfg.directional_weight or (cfg.scst_weight and reward.clip))
    if needs_clip and clip is None:
        if not cfg.clip:
            raise UserError("loss.directional_weight and SCST's CLIP reward (loss.reward_clip) need loss.clip: a "
                            "`cxrgen clip train` folder (set it with --set loss.clip=DIR)")
        clip = load_clip(cfg.clip)
    if needs_clip and image_emb is None:
        ids, emb = embed_study_images(clip, studies)
        image_emb = dict(zip(ids, emb))
    hooks = []
    if cfg.directional_weight:
        if not isinstance(clip, CXRClip):
            raise UserError(f"{cfg.clip}: the directional loss needs a MiniLM-text CLIP from `cxrgen clip train` "
                            "(external CLIPs use a BPE vocabulary the decoder does not share; use them for retrieval/SCST)")
        hooks.append(DirectionalHook(clip, cfg.directional_weight, image_emb, cfg.directional_temperature,
                                     row_fraction=cfg.row_fraction))
    if cfg.scst_weight:
        hooks.append(SCSTHook(Reward(clip if reward.clip else None, reward), cfg.scst_weight,
                              image_emb if reward.clip else {}, cfg.scst_max_len))
    return hooks
