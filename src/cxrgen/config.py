"""Run configuration: small dataclasses that map 1:1 to the YAML files in configs/.

A config file holds up to four sections (`model`, `train`, `decode`, `loss`); any field can be
overridden with `section.field=value` strings (values parsed as YAML, so `true`, `3e-4`
and `[1, 2]` work). The resolved config is saved with every run and every checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxrgen.io import atomic_write_text
from cxrgen.errors import UserError


@dataclass
class ModelConfig:
    encoder: str = "efficientnet_lite0"  # see cxrgen.models.encoders.list_encoders()
    pretrained: bool = True  # ImageNet weights when available offline; random init (warned) otherwise
    encoder_weights: str | None = None  # local weight file for timm encoders
    image_size: int = 224  # images are resized to a square of this side
    d_model: int = 256
    n_layer: int = 3
    n_head: int = 8
    dropout: float = 0.1
    max_len: int = 100  # report tokens incl. BOS/EOS; IU findings rarely exceed 90 WordPieces
    memory_grid: int | None = None  # average-pool each view's token grid to this side for the decoder (cheaper); None: keep
    label_prefix: bool = True  # 14 present/absent memory tokens: the classifier's calls at inference, the reference in training


@dataclass
class TrainConfig:
    mode: str = "frozen"  # "frozen": encoder features computed once and cached; "finetune": end-to-end
    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4
    encoder_lr: float = 5e-5  # the encoder's trained layers: all in finetune mode, the top `encoder_top` in frozen mode
    encoder_top: int = 0  # frozen mode: the encoder's last N layers train, on features cached below them (Lite0)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # fraction of all optimizer steps spent in linear warmup
    grad_clip: float = 1.0
    cls_weight: float = 0.5  # weight of the auxiliary 14-way finding BCE loss
    abnormal_weight: float = 1.0  # sampling weight of training studies with a positive finding (1: plain shuffle)
    label_smoothing: float = 0.0
    early_stop_margin: float = 0.05  # stop once val CE exceeds (1 + margin) x its minimum (the seed's 5% rule)
    select_metric: str = "cider"  # checkpoint selection: "cider" (greedy decodes of val) or "loss"
    val_decode_limit: int = 300  # studies decoded per validation pass for the selection metric
    precision: str = "auto"  # "auto": bf16-mixed where bf16 is native (cxrgen.precision), else 32; or any Lightning precision string
    num_workers: int = 0  # DataLoader worker processes; on GPU use 4-8 so decoding never starves the step
    compile: bool = False  # torch.compile the model in place (GPU; pays a one-off compile time)
    seed: int = 42
    min_token_freq: int = 2  # tokenizer vocabulary: WordPieces seen at least this often in training reports
    init_from: str | None = None  # a model folder to start from (e.g. SCST after CE); its vocabulary is kept


@dataclass
class DecodeConfig:
    beam_size: int = 3
    max_len: int = 100
    length_penalty: float = 1.0  # final score = sum log p / length ** length_penalty
    no_repeat_ngram: int = 3  # 0 disables
    rerank: bool = True  # keep the candidate (beams, plus the checkpoint's report bank) that states the classifier's calls


@dataclass
class LossConfig:
    """Training signals on top of cross-entropy; off unless a weight is set. `clip` is needed by the
    directional loss and by SCST's CLIP reward, not by its CIDEr or label-F1 rewards."""
    clip: str | None = None  # a `cxrgen clip train` folder (the directional loss); SCST also reads external CLIPs
    directional_weight: float = 0.0  # lambda in L_CE + lambda * (1 - cos(dD1, dD2))
    directional_temperature: float = 1.0  # softmax temperature of the soft report fed to the text tower
    row_fraction: float = 1.0  # share of each batch's rows that get L_dir (unbiased; cheaper)
    scst_weight: float = 0.0  # self-critical sequence training with the reward below
    reward_clip: float = 1.0  # SCST reward = clip * directional similarity + cider * CIDEr-D + ce_f1 * label F1
    reward_cider: float = 0.0
    reward_ce_f1: float = 0.0
    scst_max_len: int = 60


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls()
        for section, values in (d or {}).items():
            if section not in _SECTIONS:
                raise UserError(f"unknown config section {section!r} (expected one of {sorted(_SECTIONS)})")
            for key, value in (values or {}).items():
                _set_field(cfg, section, key, value)
        return cfg

    def save(self, path: Path) -> None:
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_text(path, text)


_SECTIONS = {f.name for f in dataclasses.fields(Config)}


def _set_field(cfg: Config, section: str, key: str, value: Any) -> None:
    obj = getattr(cfg, section)
    names = {f.name: f for f in dataclasses.fields(obj)}
    if key not in names:
        raise UserError(f"unknown config field {section}.{key} (known: {', '.join(sorted(names))})")
    current = getattr(obj, key)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise UserError(f"{section}.{key} must be true or false, got {value!r}")
    if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            value = float(value)
        except ValueError:
            raise UserError(f"{section}.{key} expects a number, got {value!r}") from None
    if current is not None and value is not None and not isinstance(value, type(current)):
        raise UserError(f"{section}.{key} expects {type(current).__name__}, got {value!r}")
    setattr(obj, key, value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings in order (later wins)."""
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not sep or not dot:
            raise UserError(f"override {item!r} must look like section.field=value, e.g. model.d_model=256")
        if section not in _SECTIONS:
            raise UserError(f"unknown config section {section!r} in {item!r}")
        _set_field(cfg, section, key, yaml.safe_load(raw) if raw.strip() else None)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) file holding a mapping; every way it can be wrong is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"config {path} is not a text file; give a YAML file") from None
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse config {path}: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML (or JSON) config, then apply overrides. `path=None` gives the defaults."""
    data = read_yaml(path) if path is not None else {}
    try:
        config = Config.from_dict(data)
    except UserError as e:  # name the file: the user edits it to fix the key
        raise UserError(f"{path}: {e}") from None
    return apply_overrides(config, overrides or [])
