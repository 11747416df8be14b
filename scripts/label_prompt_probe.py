"""Does the decoder read its label prompt? Greedy reports for validation studies with the classifier's
states and with the reference states (what training teacher-forces). Per mode it prints the distinct
reports and how well the decoded text follows the reference findings: micro precision/recall/F1 of
the labeler's positive findings (No Finding excluded) on the decoded reports.

Usage: .venv/bin/python scripts/label_prompt_probe.py --model RUN/model --data phantom:DIR [--n 32]
"""
import argparse
import collections

import torch

from cxrgen.checkpoint import load_checkpoint
from cxrgen.data.specs import load_studies
from cxrgen.data.images import load_image
from cxrgen.decoding import generate
from cxrgen.evaluate.clinical import label_texts
from cxrgen.inference import views_to_tensor
from cxrgen.data.loader import label_targets
from cxrgen.data.reports import target_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=64, help="validation studies with a positive finding")
    args = ap.parse_args()
    model, tok, cfg, _ = load_checkpoint(args.model)
    size = cfg.model.image_size
    val = [s for s in load_studies(args.data, "val") if target_text(s) and s.frontal]
    y, m = label_targets(val)
    keep = [i for i in range(len(val)) if y[i, 1:].sum() > 0][: args.n]  # any finding besides "No Finding"
    studies, y, m = [val[i] for i in keep], torch.tensor(y[keep]), torch.tensor(m[keep])
    images, vm = views_to_tensor([load_image(s.frontal.path, size) for s in studies],
                                  [load_image(s.lateral.path, size) if s.lateral else None for s in studies], size)
    with torch.no_grad():
        feats = model.encode_views(images, vm)
        for name, teacher in (("classifier states", None), ("reference states", (y, m))):
            memory = model.memory_from_features(feats, vm, teacher)
            out = generate(model.decoder, memory, tok.bos_id, tok.eos_id, beam_size=1, max_len=cfg.decode.max_len)
            texts = [tok.decode(s) for s in out.sequences]
            reports = collections.Counter(texts)
            pred, ref = label_texts(texts)[:, 1:], y.numpy()[:, 1:] > 0
            tp, fp, fn = (pred & ref).sum(), (pred & ~ref).sum(), (~pred & ref).sum()
            p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
            print(f"{name}: {len(reports)} distinct reports for {len(studies)} abnormal studies; findings in the "
                  f"text vs reference: P {p:.2f} R {r:.2f} F1 {2 * p * r / max(p + r, 1e-9):.2f} ({tp} of {tp + fn}); "
                  f"most common ({reports.most_common(1)[0][1]}x): {reports.most_common(1)[0][0][:100]}")


if __name__ == "__main__":
    main()
