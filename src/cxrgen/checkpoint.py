"""Checkpoints are directories: config.json, tokenizer.json, model.safetensors, meta.json.

They are written atomically: everything goes to a temporary sibling directory, which is
renamed into place only when complete, so a crash never leaves a half-written model that
`from_pretrained` would load. meta.json records the checkpoint FORMAT and the cxrgen version;
loading a folder of another format, or one whose files do not fit this code, is a UserError
that says which version wrote it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrgen import __version__
from cxrgen.io import atomic_dir, atomic_write_text, finish_interrupted_swap
from cxrgen.config import Config
from cxrgen.errors import UserError

if TYPE_CHECKING:  # torch is imported only when weights are saved or loaded: `check_checkpoint` stays fast
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel

FILES = ("config.json", "tokenizer.json", "model.safetensors", "meta.json")
FORMAT = 1  # bump when a change makes older checkpoint folders unreadable


def save_checkpoint(directory: str | Path, model: ReportModel, tokenizer: ReportTokenizer, config: Config,
                    meta: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_model

    with atomic_dir(directory) as tmp:
        config.save(tmp / "config.json")
        tokenizer.save(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding/head weights
        meta = {**(meta or {}), "format": FORMAT, "cxrgen_version": __version__}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return Path(directory)


def check_checkpoint(directory: str | Path) -> dict[str, Any]:
    """meta.json of a complete checkpoint folder of this format, without importing torch; a missing,
    incomplete or foreign folder is a UserError."""
    directory = Path(directory)
    finish_interrupted_swap(directory)
    if not directory.is_dir():
        raise UserError(f"model directory not found: {directory}")
    missing = [f for f in FILES if not (directory / f).is_file()]
    if missing:
        raise UserError(f"{directory} is not a cxrgen checkpoint (missing {', '.join(missing)})")
    meta = read_meta(directory)
    fmt = meta.get("format", 1)  # folders from before the field was added
    if fmt != FORMAT:
        raise UserError(f"{directory} is a checkpoint of format {fmt} (written by {_written_by(meta)}); this cxrgen "
                        f"{__version__} reads format {FORMAT}: use the cxrgen version that wrote it, or retrain")
    return meta


def _written_by(meta: dict[str, Any]) -> str:
    return f"cxrgen {meta.get('cxrgen_version', 'before 0.1.0')}"


def load_checkpoint(directory: str | Path) -> tuple[ReportModel, ReportTokenizer, Config, dict[str, Any]]:
    """(model in eval mode, tokenizer, config, meta). Raises UserError for a missing or incomplete directory."""
    from safetensors.torch import load_model

    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel

    directory = Path(directory)
    meta = check_checkpoint(directory)
    try:
        config = Config.from_dict(json.loads((directory / "config.json").read_text()))
        tokenizer = ReportTokenizer.load(directory)
        model = ReportModel(config.model, len(tokenizer), pretrained=False)  # weights come from the file below
        load_model(model, str(directory / "model.safetensors"))
    except OSError:
        raise
    except Exception as e:  # a field, a parameter name or a shape this code does not know
        reason = " ".join(str(e).split())[:300]
        raise UserError(f"{directory} does not fit this cxrgen {__version__} (written by {_written_by(meta)}: "
                        f"{reason}); use the cxrgen version that wrote it, or retrain") from e
    return model.eval(), tokenizer, config, meta


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint folder, without loading the weights."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise UserError(f"{directory} is not a cxrgen checkpoint (missing meta.json)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is corrupt ({e}); retrain or copy the model folder again") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is corrupt (not a JSON object); retrain or copy the model folder again")
    return meta


def update_meta(directory: str | Path, **entries: Any) -> None:
    """Add or replace top-level entries of a checkpoint's meta.json (atomically); the weights are untouched."""
    meta = read_meta(directory)
    meta.update(entries)
    atomic_write_text(Path(directory) / "meta.json", json.dumps(meta, indent=2, default=str))


def model_card(meta: dict[str, Any]) -> dict[str, Any]:
    """What the model is, from its meta.json: the training data (layout, phantom or real, studies per
    split), when it was trained, test metrics if recorded, and its OOD check. A field the checkpoint
    does not record is None (older checkpoints record less)."""
    data = meta.get("data") or {}
    studies = data.get("studies") or {k: meta.get(f"{k}_studies") for k in ("train", "val")}
    ood = meta.get("ood")
    return {
        "data": {"layout": data.get("layout"), "phantom": data.get("phantom"),
                 "studies": {k: studies.get(k) for k in ("train", "val", "test")}},
        "trained_at": meta.get("trained_at"),
        "test_metrics": meta.get("test_metrics"),
        "ood_check": None if not ood else {
            "quantile": ood.get("quantile"),
            "thresholds": {view: v.get("threshold") for view, v in (ood.get("views") or {}).items()}},
        "cxrgen_version": meta.get("cxrgen_version"),
    }
