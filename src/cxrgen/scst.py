"""Self-critical sequence training (Rennie et al., 2017) with a CLIP reward: the second way to use CLIP.

The directional loss differentiates through soft tokens; SCST instead samples real reports
and pushes up the log-probability of samples that score better than the model's own greedy
decode (the baseline), so the reward can be any function of strings:
    reward = w_clip * cos(E_T(sample) - E_I(x), E_T(r) - E_I(x))    (the directional similarity)
           + w_cider * CIDEr-D(sample, r) + w_ce * CheXpert-label F1(sample, r)
    loss   = -(reward(sample) - reward(greedy)) * log p(sample)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrgen.models.clip import ClipModel


@dataclass
class RewardWeights:
    clip: float = 1.0  # directional similarity in CLIP space
    cider: float = 0.0  # CIDEr-D against the reference (document frequencies from the batch's references)
    ce_f1: float = 0.0  # F1 of the labeler's positive findings, sample vs reference


def sample(decoder: nn.Module, memory, bos_id: int, eos_id: int, max_len: int,
           temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial samples with their summed log-probabilities (differentiable).

    Returns ids (B, L) without BOS, padded with EOS after the first EOS, and log p (B,) of each
    sequence up to and including its EOS.
    """
    B, device = memory.tokens.shape[0], memory.tokens.device
    ids = torch.full((B, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    logp_sum = torch.zeros(B, device=device)
    cache: list = []
    for _ in range(min(max_len, decoder.cfg.max_len) - 1):  # never past the positions the decoder has
        logits, _ = decoder(decoder.embed(ids[:, -1:]), memory.tokens, memory.mask, cache, condition=memory.condition)
        step = (logits[:, -1].float() / temperature).index_fill(1, ids.new_tensor([bos_id]), float("-inf"))
        logp = step.log_softmax(-1)  # (B, V); never emit BOS again
        tok = torch.multinomial(logp.detach().exp(), 1).squeeze(1)
        tok = tok.masked_fill(finished, eos_id)
        logp_sum = logp_sum + logp.gather(1, tok[:, None]).squeeze(1) * (~finished)
        ids = torch.cat([ids, tok[:, None]], dim=1)
        finished |= tok == eos_id
        if finished.all():
            break
    return ids[:, 1:], logp_sum


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
            from pycocoevalcap.cider.cider import Cider

            _, scores = Cider().compute_score({i: [x] for i, x in enumerate(refs)},
                                              {i: [t or "."] for i, t in enumerate(texts)})
            r += self.w.cider * torch.as_tensor(scores, dtype=torch.float32)
        if self.w.ce_f1:
            r += self.w.ce_f1 * label_f1(texts, refs)
        return r


def label_f1(texts: list[str], refs: list[str]) -> torch.Tensor:
    """F1 between the positive CheXpert findings of each text and its reference (1 when both have none)."""
    from cxrgen.labeler import label_many

    out = []
    for a, b in zip(label_many(texts), label_many(refs)):
        pa = {k for k, v in a.items() if v == 1}
        pb = {k for k, v in b.items() if v == 1}
        out.append(1.0 if not pa and not pb else 2 * len(pa & pb) / (len(pa) + len(pb)))
    return torch.tensor(out)


class SCSTHook:
    """`extra_losses` hook for cxrgen.train.GeneratorModule: adds weight * SCST loss.

    Memory is rebuilt from the batch (cached features or images); E_I(x) comes from
    `image_emb` by study id, E_T(r) is cached per study after its first use.
    """

    def __init__(self, reward: Reward, weight: float, image_emb: dict[str, torch.Tensor], max_len: int = 100,
                 temperature: float = 1.0):
        self.reward, self.weight, self.image_emb = reward, weight, image_emb
        self.max_len, self.temperature = max_len, temperature
        self.ref_emb: dict[str, torch.Tensor] = {}

    def _memory(self, module, batch):
        vm = batch["view_mask"]
        if "features" in batch:
            return module.model.memory_from_features(batch["features"].float(), vm)  # float16 from the loader
        return module.model.memory_from_features(module.model.encode_views(batch["image"].float() / 255, vm), vm)

    def __call__(self, module: nn.Module, batch: dict, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        from cxrgen.decoding import greedy

        tok, ids = module.tokenizer, batch["study_id"]
        memory = self._memory(module, batch)
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


def build_scst_hook(clip_dir: str | None, weight: float, studies: list, reward_weights: RewardWeights | None = None,
                    max_len: int = 100) -> SCSTHook:
    """Any CLIP that `load_clip` reads (SCST only needs strings) + the studies whose images it embeds once.

    Without a CLIP reward weight no CLIP is loaded (`clip_dir` may be None): CIDEr and label F1 need none.
    """
    from cxrgen.models.clip import load_clip
    from cxrgen.retrieval import embed_study_images

    reward_weights = reward_weights or RewardWeights()
    if not reward_weights.clip:
        return SCSTHook(Reward(None, reward_weights), weight, {}, max_len)
    clip = load_clip(clip_dir)
    ids, emb = embed_study_images(clip, studies)
    return SCSTHook(Reward(clip, reward_weights), weight, dict(zip(ids, emb)), max_len)
