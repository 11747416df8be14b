"""`cxrgen clip train|eval|probe|retrieve`: train the chest X-ray CLIP, measure it, retrieve reports with it.

The work is in `cxrgen.training.clip` and `cxrgen.retrieval`; torch is imported inside the handlers
so that every other `cxrgen` command starts without it.
"""
from __future__ import annotations

import json
from pathlib import Path

from cxrgen.errors import UserError


def _check(args) -> None:
    """The dataset spec and the CLIP path, checked before torch is imported."""
    from cxrgen.data.specs import check_spec

    if getattr(args, "data", None):
        check_spec(args.data)
    if getattr(args, "clip", None) and not Path(args.clip).exists():
        raise UserError(f"CLIP checkpoint not found: {args.clip}")


def _train(args) -> int:
    _check(args)
    from cxrgen.training.clip import load_run_config, study_pairs, train_clip_run

    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    if args.no_hard_negatives:
        overrides["hard_negatives"] = False
    run = load_run_config(args.config, overrides)
    _, metrics = train_clip_run(run, study_pairs(args.data, "train"), study_pairs(args.data, "test"), args.output, args.data)
    print(_table({"before training": metrics["test_before"], "after training": metrics["test_after"]}))
    print(f"CLIP saved to {args.output}")
    return 0


def _table(rows: dict[str, dict]) -> str:
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "template_cos", "report_cos",
            "image_prefers_true"]
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in keys) + " |")
    return "\n".join(lines)


def _eval(args) -> int:
    _check(args)
    from cxrgen.training.clip import evaluate_clip, study_pairs
    from cxrgen.models.clip import CXRClip, load_clip

    clip = load_clip(args.clip)
    studies = study_pairs(args.data, args.split)
    if isinstance(clip, CXRClip):
        metrics = evaluate_clip(clip, studies)
    else:
        from cxrgen.retrieval import embed_study_images, negation_probe, recall_at_k

        ids, img = embed_study_images(clip, studies)
        by_id = {s.id: s.findings for s in studies}
        texts = [by_id[i] for i in ids]
        metrics = {"n": len(ids), **recall_at_k(img, clip.embed_texts(texts)), **negation_probe(clip, texts, img)}
    print(json.dumps(metrics, indent=2) if args.json else _table({args.clip: metrics}))
    return 0


def _probe(args) -> int:
    _check(args)
    from cxrgen.training.clip import study_pairs
    from cxrgen.models.clip import ClipConfig, CXRClip, load_clip

    clip = load_clip(args.clip) if args.clip else CXRClip(ClipConfig(), pretrained=False).eval()
    reports = [s.findings for s in study_pairs(args.data, args.split)] if args.data else None
    from cxrgen.retrieval import negation_probe

    metrics = negation_probe(clip, reports)
    print(json.dumps(metrics, indent=2) if args.json else _table({args.clip or "MiniLM (untrained)": metrics}))
    return 0


def _retrieve(args) -> int:
    _check(args)
    from cxrgen.io import write_predictions
    from cxrgen.models.clip import load_clip
    from cxrgen.retrieval import retrieve_split

    preds = retrieve_split(load_clip(args.clip), args.data, args.split, args.k)
    write_predictions(preds, args.output)
    print(f"{len(preds)} retrieved reports written to {args.output}")
    return 0


def register(sub) -> None:
    clip = sub.add_parser("clip", help="chest X-ray CLIP: train, evaluate, negation probe, retrieval baseline")
    csub = clip.add_subparsers(dest="clip_command", required=True)

    p = csub.add_parser("train", help="train CXR-CLIP on the training split's image-report pairs")
    p.add_argument("--data", required=True, help="dataset spec, e.g. phantom:DIR or r2gen:DIR")
    p.add_argument("--output", required=True, help="output CLIP directory")
    p.add_argument("--config", help="YAML with model/train sections (e.g. configs/clip.yaml)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-hard-negatives", action="store_true", help="plain InfoNCE (the ablation of the negation fix)")
    p.set_defaults(func=_train)

    p = csub.add_parser("eval", help="recall@1/5/10 both ways and the negation probe on a split")
    p.add_argument("--clip", required=True, help="CLIP directory or open_clip state dict / HF CLIP folder")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)

    p = csub.add_parser("probe", help="negation probe: does the text space separate 'X' from 'no X'?")
    p.add_argument("--clip", help="CLIP to probe (default: untrained MiniLM text tower)")
    p.add_argument("--data", help="also probe report/hard-negative pairs of this dataset")
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_probe)

    p = csub.add_parser("retrieve", help="CXR-RePaiR-style baseline: nearest training report(s) per study -> JSONL")
    p.add_argument("--clip", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=1, help="1: nearest whole report; >1: top-k training sentences")
    p.add_argument("--output", required=True, help="predictions JSONL for `cxrgen eval`")
    p.set_defaults(func=_retrieve)
