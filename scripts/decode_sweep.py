"""Decoding alternatives for one trained model, on the VALIDATION split (never the test split).

Usage: .venv/bin/python scripts/decode_sweep.py --model runs/NAME/model --data phantom:DIR --out DIR
           [--split val] [--samples 16] [--threads 2]
then:  .venv/bin/cxrgen eval --predictions DIR/*.jsonl --dataset phantom:DIR --split val --output DIR/eval --with-baselines

Writes one predictions JSONL per way of decoding:
  beam3_lp3_ng3 ... beam search variants (beam size, length penalty, no-repeat n-gram size);
  mbr           the beam-3 report and --samples multinomial samples; keep the candidate with the
                highest mean sentence BLEU-4 (pycocoevalcap) against the samples (minimum Bayes risk);
  label_sets    no decoder: the most frequent training report whose positive CheXpert findings are
                exactly the classifier's calls (how much the classifier alone knows);
and prints the auxiliary classifier's validation AUROC per condition.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

VARIANTS = {  # name: (beam size, length penalty, no-repeat n-gram)
    "beam3_lp3_ng3": (3, 3.0, 3), "beam3_lp4_ng3": (3, 4.0, 3), "beam3_lp6_ng3": (3, 6.0, 3),
    "beam5_lp3_ng3": (5, 3.0, 3), "beam3_lp3_ng0": (3, 3.0, 0), "beam3_lp3_ng4": (3, 3.0, 4),
}


def mbr_pick(candidates: list[str], n_samples: int) -> str:
    """The candidate with the highest mean BLEU-4 against the last `n_samples` candidates (itself excluded)."""
    from pycocoevalcap.bleu.bleu import Bleu

    from cxrgen.evaluate.nlg import clean

    texts = [clean(c) or "." for c in candidates]
    samples = range(len(texts) - n_samples, len(texts))
    pairs = [(i, j) for i in range(len(texts)) for j in samples if i != j]
    _, per_pair = Bleu(4).compute_score({k: [texts[j]] for k, (_, j) in enumerate(pairs)},
                                        {k: [texts[i]] for k, (i, _) in enumerate(pairs)}, verbose=0)
    total = defaultdict(float)
    for (i, _), s in zip(pairs, per_pair[3]):
        total[i] += s
    return candidates[max(range(len(texts)), key=lambda i: total[i])]


def label_set_reports(train_texts: list[str], calls: torch.Tensor) -> list[str]:
    """Per study, the most frequent training report with exactly its called positive findings."""
    from cxrgen.evaluate.nlg import clean
    from cxrgen.labeler import CONDITIONS, label_many

    groups: dict[frozenset, Counter] = defaultdict(Counter)
    for text, lab in zip(train_texts, label_many(train_texts)):
        groups[frozenset(c for c in CONDITIONS if lab.get(c) == 1)][clean(text)] += 1
    out = []
    for row in calls.tolist():
        pos = frozenset(c for c, v in zip(CONDITIONS, row) if v)
        if pos not in groups:  # nearest called set; ties go to the more common one
            pos = min(groups, key=lambda g: (len(g ^ pos), -sum(groups[g].values())))
        out.append(groups[pos].most_common(1)[0][0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--samples", type=int, default=16, help="MBR: samples per study (0 skips MBR)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.split == "test":
        raise SystemExit("decode_sweep chooses decoding settings: run it on the validation split, not test")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from torchmetrics.functional.classification import binary_auroc
    from tqdm.auto import tqdm

    from cxrgen.checkpoint import load_checkpoint
    from cxrgen.data.specs import load_studies
    from cxrgen.data.images import load_image
    from cxrgen.decoding import generate
    from cxrgen.labeler import CONDITIONS
    from cxrgen.inference import views_to_tensor
    from cxrgen.decoding import sample
    from cxrgen.data.loader import label_targets
    from cxrgen.data.reports import target_text

    model, tok, cfg, _ = load_checkpoint(args.model)
    model.eval()
    studies = load_studies(args.data)
    train = [s for s in studies if s.split == "train" and target_text(s)]
    evals = [s for s in studies if s.split == args.split and target_text(s) and s.frontal is not None]
    size = cfg.model.image_size
    preds: dict[str, list[str]] = defaultdict(list)
    probs, calls = [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in tqdm(range(0, len(evals), args.batch_size), desc="decode", unit="batch"):
            chunk = evals[i:i + args.batch_size]
            images, view_mask = views_to_tensor(
                [load_image(s.frontal.path, size) for s in chunk],
                [load_image(s.lateral.path, size) if s.lateral and s.lateral.path else None for s in chunk], size)
            memory = model.encode(images, view_mask)
            probs.append(torch.sigmoid(memory.cls_logits))
            calls.append(model.predicted_states(memory.cls_logits))
            for name, (beam, lp, ng) in VARIANTS.items():
                out = generate(model.decoder, memory, tok.bos_id, tok.eos_id, beam, cfg.decode.max_len, lp, ng)
                preds[name] += [tok.decode(s) for s in out.sequences]
            if args.samples:
                n = args.samples
                ids, _ = sample(model.decoder, memory.repeat(n), tok.bos_id, tok.eos_id, cfg.decode.max_len)
                drawn = [tok.decode(r[:r.index(tok.eos_id)] if tok.eos_id in r else r) for r in ids.tolist()]
                beams = preds["beam3_lp3_ng3"][-len(chunk):]
                preds["mbr"] += [mbr_pick([b, *drawn[k * n:(k + 1) * n]], n) for k, b in enumerate(beams)]
    preds["label_sets"] = label_set_reports([target_text(s) for s in train], torch.cat(calls))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, reports in preds.items():
        with open(out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"id": s.id, "report": r}) + "\n" for s, r in zip(evals, reports))
    print(f"{len(evals)} {args.split} studies, {len(preds)} prediction files in {out} ({time.perf_counter() - t0:.0f} s)")

    labels, known = (torch.from_numpy(a) for a in label_targets(evals))
    prob = torch.cat(probs)
    print("\nAuxiliary classifier, AUROC on this split (conditions with at least 3 positives):")
    aucs = []
    for c, name in enumerate(CONDITIONS):
        k = known[:, c] > 0
        pos = int(labels[k, c].sum())
        if pos >= 3 and pos < int(k.sum()):
            aucs.append(float(binary_auroc(prob[k, c], labels[k, c].long())))
            print(f"  {name}: {aucs[-1]:.3f} ({pos} positives)")
    print(f"  mean over {len(aucs)} conditions: {sum(aucs) / len(aucs):.3f}")


if __name__ == "__main__":
    main()
