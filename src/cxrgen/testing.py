"""Helpers shared by the tests (tests/) and the bench and script files (bench/, scripts/).

- The one tiny model: `TINY_MODEL` (the `model:` section), `tiny_config` / `tiny_overrides`
  to build a config from it, `make_tiny_checkpoint` and `random_model` to save one.

Importing this module is cheap: torch and the rest of cxrgen are imported where used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# The one tiny model
# ---------------------------------------------------------------------------------------------

#: The `model:` section of every tiny test model: ResNet-18 at 32 px (one patch per view), one
#: decoder layer of width 32. Tests that need another size override single fields of it.
TINY_MODEL: dict[str, Any] = {"encoder": "resnet18", "pretrained": False, "image_size": 32, "d_model": 32,
                              "n_layer": 1, "n_head": 2, "max_len": 24}


def tiny_model(**changes: Any) -> dict[str, Any]:
    """TINY_MODEL with some fields changed (e.g. `image_size=128`)."""
    return {**TINY_MODEL, **changes}


def tiny_config(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A config mapping (for `Config.from_dict` or a YAML file): TINY_MODEL, changed by `model=`,
    plus the other sections as given, e.g. `tiny_config(train={"batch_size": 4})`."""
    out = {"model": tiny_model(**sections.pop("model", {}))}
    out.update({name: dict(fields) for name, fields in sections.items()})
    return out


def _override_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def tiny_overrides(**sections: dict[str, Any]) -> list[str]:
    """`tiny_config(**sections)` as `section.field=value` strings (what `--set` and `load_config` take)."""
    return [f"{name}.{key}={_override_value(value)}"
            for name, fields in tiny_config(**sections).items() for key, value in fields.items()]


#: The tiny model the server tests and benches serve: 128 px so the attention map has a grid
#: (4 x 4 patches), greedy decoding of at most 20 tokens.
SERVE_CONFIG = tiny_config(model={"image_size": 128}, decode={"beam_size": 1, "max_len": 20})

_CHECKPOINT_REPORTS = ["The heart is normal in size. No pleural effusion or pneumothorax.",
                       "Mild cardiomegaly. Small left pleural effusion. The lungs are clear."]


def make_tiny_checkpoint(directory: Path) -> Path:
    """A randomly initialised SERVE_CONFIG model, with a two-report vocabulary, saved through the
    real checkpoint code (a few MB, seconds on a CPU)."""
    import torch

    from cxrgen.checkpoint import save_checkpoint
    from cxrgen.config import Config
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel

    cfg = Config.from_dict(tiny_config(**SERVE_CONFIG))
    tok = ReportTokenizer.build(_CHECKPOINT_REPORTS)
    torch.manual_seed(0)
    return save_checkpoint(directory, ReportModel(cfg.model, len(tok), pretrained=False), tok, cfg)


def random_model(directory: Path, size: str) -> Path:
    """The default config ("default") or SERVE_CONFIG ("tiny") with random weights and the IU
    training reports' vocabulary, saved as a checkpoint (what the benches serve)."""
    import torch

    from cxrgen.checkpoint import save_checkpoint
    from cxrgen.config import Config
    from cxrgen.data.iu import load_iu_reports
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel

    cfg = Config() if size == "default" else Config.from_dict(tiny_config(**SERVE_CONFIG))
    tokenizer = ReportTokenizer.build([s.findings for s in load_iu_reports() if s.split == "train"], min_freq=2)
    torch.manual_seed(0)
    return save_checkpoint(directory, ReportModel(cfg.model, len(tokenizer)), tokenizer, cfg)
