"""Regenerate the figures of docs/phantom.md.

- docs/img/phantom_gallery.png: one row per drawn finding: a real IU report sentence that mentions
  it, and the phantom PA and lateral rendered from that sentence alone.
- docs/img/phantom_vs_real.png: a real IU study from ../shared/data/iu_xray/smoke (PA + lateral)
  beside the phantom rendered from the same study's findings.

Usage: .venv/bin/python scripts/phantom_gallery.py [--smoke ../shared/data/iu_xray/smoke] [--view 160]
"""
import argparse
import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxrgen.data.iu import load_iu_xray
from cxrgen.data.phantom import render_text
from cxrgen.data.phantom.findings import KIND
from cxrgen.labeler import mentions

ROWS = ("normal", "cardiomegaly", "effusion", "pneumothorax", "consolidation", "opacity", "atelectasis", "edema",
        "hyperinflation", "nodule", "mass", "granuloma", "rib_fracture", "pacemaker", "sternotomy", "clips", "catheter",
        "hiatal_hernia", "degenerative_spine", "scoliosis", "scarring", "tortuous_aorta", "elevated_hemidiaphragm")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "img"


def example_sentences() -> dict[str, tuple[str, str]]:
    """First train sentence per kind that, rendered alone, draws exactly that kind (positive)."""
    found: dict[str, tuple[str, str]] = {}
    for s in load_iu_xray("train"):
        for m in mentions(s.findings):
            kind = KIND.get(m.finding)
            if m.status != 1 or kind not in ROWS or kind in found:
                continue
            alone = {(KIND.get(x.finding), x.status) for x in mentions(m.sentence) if x.status != 0}
            if alone == {(kind, 1)}:
                found[kind] = (s.id, m.sentence)
        if "normal" not in found and not [m for m in mentions(s.findings) if m.status != 0]:
            found["normal"] = (s.id, s.findings)
    return found


def panel_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, width: int, font) -> None:
    draw.multiline_text(xy, "\n".join(textwrap.wrap(text, width)[:6]), fill=235, font=font, spacing=3)


def gallery(view: int) -> Path:
    examples = example_sentences()
    rows = [k for k in ROWS if k in examples]
    text_w, cols = 2 * view, 2
    per_col = (len(rows) + cols - 1) // cols
    W, H = cols * (text_w + 2 * view + 8), per_col * (view + 4)
    sheet = Image.new("L", (W, H), 20)
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(10, view // 12))
    for i, kind in enumerate(rows):
        sid, sentence = examples[kind]
        front, side, _ = render_text(sentence, sid, size=view)
        x, y = (i // per_col) * (text_w + 2 * view + 8), (i % per_col) * (view + 4)
        d.text((x + 4, y + 4), kind.replace("_", " "), fill=255, font=font)
        panel_text(d, (x + 4, y + 8 + view // 10), f"\"{sentence}\"", int(text_w / (view / 24)) , font)
        sheet.paste(Image.fromarray(front), (x + text_w, y))
        sheet.paste(Image.fromarray(side), (x + text_w + view, y))
    out = DOCS / "phantom_gallery.png"
    sheet.save(out, optimize=True)
    return out


def versus_real(smoke: Path, view: int) -> Path:
    manifest = json.loads((smoke / "manifest.json").read_text())
    by_study: dict[str, list[dict]] = {}
    for row in manifest:
        by_study.setdefault(row["study_xml"], []).append(row)
    rows = next(r for r in by_study.values() if len(r) >= 2 and r[0]["findings"])
    real = [np.asarray(Image.open(smoke / "images" / r["image"]).convert("L").resize((view, view))) for r in rows[:2]]
    sid = rows[0]["image_id"].rsplit("-", 1)[0]
    front, side, truth = render_text(rows[0]["findings"], sid, size=view)
    sheet = Image.fromarray(np.hstack(real + [front, side]))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(10, view // 16))
    d.text((4, 4), f"real IU {sid} (Open-i, CC BY-NC-ND 4.0)", fill=255, font=font)
    d.text((2 * view + 4, 4), "phantom from the same findings", fill=255, font=font)
    out = DOCS / "phantom_vs_real.png"
    sheet.save(out, optimize=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "smoke")
    ap.add_argument("--view", type=int, default=160)
    args = ap.parse_args()
    DOCS.mkdir(parents=True, exist_ok=True)
    for path in (gallery(args.view), versus_real(args.smoke, 256)):
        print(f"{path} {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
