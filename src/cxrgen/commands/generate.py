"""`cxrgen generate`: reports for one study (printed) or a whole split (JSONL for `cxrgen eval`)."""
from __future__ import annotations

import argparse
import json

from cxrgen.errors import UserError

UNLIKE = "This image is unlike the images this model was trained on; the draft is not meaningful"


def flagged(ood: list[dict] | None) -> list[dict]:
    """The views whose OOD verdict is a flag (none when there is no verdict)."""
    return [v for v in ood or [] if v["flag"]]


def why(views: list[dict]) -> str:
    return ", ".join(f"{v['view']} score {v['score']:.1f} > threshold {v['threshold']:.1f}" for v in views)


def _single(gen, args, decode: dict) -> int:
    from cxrgen import DISCLAIMER
    from cxrgen.data.images import ImageError, load_image

    try:
        frontal = load_image(args.image)
        lateral = load_image(args.lateral) if args.lateral else None
    except ImageError as e:
        raise UserError(str(e)) from None
    out = gen.generate(frontal, lateral, **decode)
    bad = flagged(out["ood"])
    if bad and args.refuse_ood:
        raise UserError(f"{UNLIKE} ({why(bad)}); no draft written (--refuse-ood)")
    if args.json:
        out["attention"] = None if out["attention"] is None else out["attention"].round(4).tolist()
        print(json.dumps({**out, "disclaimer": DISCLAIMER}, indent=2))
    else:
        if bad:
            print(f"WARNING: {UNLIKE} ({why(bad)}).\n")
        print(out["report"])
        if out["ood"] is None:
            from cxrgen.ood import NO_STATS

            print(f"\n(Note: {NO_STATS}.)")
        print(f"\n({DISCLAIMER})")
    return 0


def _split(gen, args, decode: dict) -> int:
    from cxrgen.data.specs import load_studies
    from cxrgen.inference import generate_for_studies
    from cxrgen.io import write_jsonl

    if not args.output:
        raise UserError("--data needs --output PREDICTIONS.jsonl")
    studies = [s for s in load_studies(args.data, args.split) if s.frontal is not None and s.frontal.path]
    if not studies:
        raise UserError(f"no studies with a frontal image in {args.data} (split {args.split})")
    skipped, unlike = [], []

    def rows():
        for s, out in generate_for_studies(gen, studies, args.batch_size, **decode):
            if out is None:
                skipped.append(s.id)
                continue
            if flagged(out["ood"]):
                unlike.append(s.id)
            if out["report"] is None:  # --refuse-ood: not decoded; `cxrgen eval` scores it as an empty report
                yield {"id": s.id, "report": "", "refused": "ood", "ood": out["ood"]}
                continue
            yield {"id": s.id, "report": out["report"], "calls": out["calls"], "ood": out["ood"]}

    written = write_jsonl(args.output, rows())
    print(f"{written} predictions written to {args.output}"
          + (f" ({len(skipped)} studies skipped: unreadable image)" if skipped else ""))
    if gen.ood is None:
        from cxrgen.ood import NO_STATS

        print(f"no OOD verdicts: {NO_STATS}")
    else:
        print(f"{len(unlike)} of {len(studies) - len(skipped)} studies flagged as unlike the training images"
              + (' (no draft: written with "refused": "ood" and an empty report)' if args.refuse_ood and unlike else ""))
    return 0


def _retrieval(args) -> int:
    """CXR-RePaiR-style baseline (cxrgen.retrieval): nearest training report(s) in CLIP space."""
    from cxrgen.io import write_predictions
    from cxrgen.models.clip import load_clip
    from cxrgen.retrieval import retrieve_split

    if not args.clip:
        raise UserError("--method retrieval needs --clip DIR")
    if not args.data or not args.output:
        raise UserError("retrieval needs --data SPEC and --output PREDICTIONS.jsonl")
    preds = retrieve_split(load_clip(args.clip), args.data, args.split, args.k)
    write_predictions(preds, args.output)
    print(f"{len(preds)} retrieved reports written to {args.output}")
    return 0


def _generate(args) -> int:
    from cxrgen.inference import ReportGenerator

    if args.method == "retrieval":
        return _retrieval(args)
    if not args.model:
        raise UserError("--model is required (or use --method retrieval --clip DIR)")
    if bool(args.image) == bool(args.data):
        raise UserError("give either --image FRONTAL.png or --data SPEC --output PREDICTIONS.jsonl")
    gen = ReportGenerator.from_pretrained(args.model, device=args.device)
    decode = {k: v for k, v in (("beam_size", args.beam), ("max_len", args.max_len),
                                ("length_penalty", args.length_penalty), ("rerank", args.rerank)) if v is not None}
    decode["skip_flagged"] = args.refuse_ood  # a flagged image is not decoded at all
    return _single(gen, args, decode) if args.image else _split(gen, args, decode)


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate reports from images (one study, or a dataset split to JSONL)")
    p.add_argument("--model", help="checkpoint directory (e.g. runs/NAME/model)")
    p.add_argument("--method", choices=("model", "retrieval"), default="model",
                   help="retrieval: nearest training report(s) in CLIP space (needs --clip, --data, --output)")
    p.add_argument("--clip", help="CLIP for --method retrieval (cxrgen clip train output, open_clip .pt, HF folder)")
    p.add_argument("--k", type=int, default=1, help="--method retrieval: 1 = whole report, >1 = top-k sentences")
    p.add_argument("--image", help="frontal image (PNG, JPEG or DICOM)")
    p.add_argument("--lateral", help="lateral image of the same study (optional)")
    p.add_argument("--json", action="store_true", help="print report, finding probabilities and attention as JSON")
    p.add_argument("--data", help="dataset spec, e.g. phantom:DIR; writes JSONL {id, report, calls, ood}")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    p.add_argument("--output", help="predictions JSONL path (with --data)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam", type=int, help="beam size (default from the model's config; 1 = greedy)")
    p.add_argument("--max-len", type=int, help="maximum report length in tokens")
    p.add_argument("--length-penalty", type=float,
                   help="beam search ranks by log p / length ** this (default from the model's config)")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the beam whose findings agree best with the classifier's calls (default from the model's config)")
    p.add_argument("--refuse-ood", action="store_true",
                   help="write no draft for an image unlike the model's training images (exit 2 for --image; "
                        'for --data a row with an empty report and "refused": "ood"); by default it gets its draft '
                        "and a warning")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=_generate)
