"""The demo's results page: metrics beside the baselines, and sample studies with their reports."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

from cxrgen import DISCLAIMER
from cxrgen.io import atomic_write_text, read_predictions

MAIN_METRICS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _metric_table(metrics: dict) -> str:
    names = list(MAIN_METRICS) + sorted({m for sys in metrics.values() for m in sys if m.startswith("CE")})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for system, values in metrics.items():
        cells = []
        for n in names:
            v = values.get(n)
            cells.append(f"<td>{v['value']:.3f}<br><small>[{v['ci_low']:.3f}, {v['ci_high']:.3f}]</small></td>" if v else "<td>-</td>")
        rows.append(f"<tr><th>{html.escape(system)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>system</th>{head}</tr>{''.join(rows)}</table>"


def write_results_page(out: Path, phantom: Path, run: Path, predictions: Path, evaluation: Path, samples: int = 8) -> Path:
    out = Path(out)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    annotation = json.loads((phantom / "annotation.json").read_text())
    refs = {s["id"]: s for s in annotation.get("test", [])}
    preds = [{"id": k, "report": v} for k, v in read_predictions(predictions).items()]
    rel = lambda p: html.escape(os.path.relpath(p, out))
    cards = []
    for p in preds[:: max(1, len(preds) // samples)][:samples]:
        ref = refs.get(p["id"])
        if ref is None:
            continue
        imgs = "".join(f'<img src="{rel(phantom / "images" / ip)}" alt="{html.escape(ip)}">' for ip in ref["image_path"])
        cards.append(
            f"<div class=card><h3>{html.escape(p['id'])}</h3><div class=imgs>{imgs}</div>"
            f"<p><b>Generated (draft):</b> {html.escape(p['report'])}</p>"
            f"<p><b>Reference:</b> {html.escape(ref['report'])}</p></div>"
        )
    charts = "".join(f'<img class=chart src="{rel(png)}">' for png in sorted(evaluation.glob("*.png")))
    curves = "".join(f'<img class=chart src="{rel(png)}">' for png in sorted(run.glob("*.png")))
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>cxrgen demo results</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} .banner{{background:#b00020;color:#fff;padding:.6em 1em;font-weight:bold}}
.card{{border:1px solid #ddd;padding:1em;margin:1em 0}} .imgs img{{height:220px;margin-right:8px}} .chart{{max-width:100%}}
</style></head><body>
<div class=banner>{html.escape(DISCLAIMER)}</div>
<h1>cxrgen demo: phantom IU X-ray, R2Gen test split</h1>
<p>The images are phantom radiographs rendered from the real IU X-ray reports (see docs/phantom.md);
the model never saw real images. Values are on the test split with 95% bootstrap intervals; the trivial
baselines are printed beside the model on purpose.</p>
<h2>Metrics</h2>{_metric_table(metrics)}
<h2>Charts</h2>{charts}{curves}
<h2>Sample test studies</h2>{''.join(cards)}
</body></html>"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
