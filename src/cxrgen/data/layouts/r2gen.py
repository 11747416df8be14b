"""R2Gen layout: `annotation.json` ({split: [{id, report, image_path, split}]}) plus `images/`."""
from __future__ import annotations

import json
from pathlib import Path

from cxrgen.data.studies import ImageRef, Problem, Study

_SPLITS = {"train": "train", "val": "val", "test": "test", "validate": "val"}


def read_r2gen(root: str | Path, problems: list[Problem] | None = None) -> list[Study]:
    """image_path[0] is the frontal view and image_path[1] the lateral (R2Gen convention)."""
    root = Path(root)
    ann_path = root / "annotation.json"
    problems = [] if problems is None else problems
    try:
        annotation = json.loads(ann_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(ann_path) from None
    except json.JSONDecodeError as e:
        problems.append(Problem(str(ann_path), f"malformed JSON ({e})"))
        return []
    studies, seen = [], set()
    for split, items in annotation.items():
        for i, item in enumerate(items):
            where = f"{ann_path}[{split}][{i}]"
            if not isinstance(item, dict) or "id" not in item:
                problems.append(Problem(where, "entry without an id"))
                continue
            sid = str(item["id"])
            if sid in seen:
                problems.append(Problem(where, f"duplicate id ({sid})"))
                continue
            seen.add(sid)
            paths = item.get("image_path") or []
            views = ["PA", "LL"] + [None] * max(0, len(paths) - 2)
            studies.append(Study(
                id=sid,
                split=_SPLITS.get(item.get("split", split), split),
                images=[ImageRef(root / "images" / p, v, Path(p).stem) for p, v in zip(paths, views)],
                findings=" ".join(str(item.get("report", "")).split()),
                meta={"layout": "r2gen"},
            ))
    return studies
