"""Checkpoints are directories: config.json, tokenizer.json, model.safetensors, meta.json.

They are written atomically: everything goes to a temporary sibling directory, which is
renamed into place only when complete, so a crash never leaves a half-written model that
`from_pretrained` would load.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model

from cxrgen.config import Config
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.errors import UserError
from cxrgen.models.generator import ReportModel

FILES = ("config.json", "tokenizer.json", "model.safetensors", "meta.json")


def save_checkpoint(directory: str | Path, model: ReportModel, tokenizer: ReportTokenizer, config: Config,
                    meta: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        config.save(tmp / "config.json")
        tokenizer.save(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding/head weights
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: str | Path) -> tuple[ReportModel, ReportTokenizer, Config, dict[str, Any]]:
    """(model in eval mode, tokenizer, config, meta). Raises UserError for a missing or incomplete directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"model directory not found: {directory}")
    missing = [f for f in FILES if not (directory / f).is_file()]
    if missing:
        raise UserError(f"{directory} is not a cxrgen checkpoint (missing {', '.join(missing)})")
    config = Config.from_dict(json.loads((directory / "config.json").read_text()))
    tokenizer = ReportTokenizer.load(directory)
    model = ReportModel(config.model, len(tokenizer), pretrained=False)  # weights come from the file below
    load_model(model, str(directory / "model.safetensors"))
    meta = json.loads((directory / "meta.json").read_text())
    return model.eval(), tokenizer, config, meta
