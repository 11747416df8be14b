"""`cxrgen generate`: reports for one study (printed) or a whole split (JSONL for `cxrgen eval`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from cxrgen.atomic import atomic_open
from cxrgen.errors import UserError

_logger = logging.getLogger(__name__)


def _single(gen, args, decode: dict) -> int:
    from cxrgen import DISCLAIMER
    from cxrgen.data.images import ImageError, load_image

    try:
        frontal = load_image(args.image)
        lateral = load_image(args.lateral) if args.lateral else None
    except ImageError as e:
        raise UserError(str(e)) from None
    out = gen.generate(frontal, lateral, **decode)
    if args.json:
        out["attention"] = None if out["attention"] is None else out["attention"].round(4).tolist()
        print(json.dumps({**out, "disclaimer": DISCLAIMER}, indent=2))
    else:
        print(out["report"])
        print(f"\n({DISCLAIMER})")
    return 0


def _split(gen, args, decode: dict) -> int:
    from tqdm.auto import tqdm

    from cxrgen.data.datasets import load_studies
    from cxrgen.data.images import ImageError, load_image

    if not args.output:
        raise UserError("--data needs --output PREDICTIONS.jsonl")
    studies = [s for s in load_studies(args.data, args.split) if s.frontal is not None and s.frontal.path]
    if not studies:
        raise UserError(f"no studies with a frontal image in {args.data} (split {args.split})")
    size = gen.config.model.image_size
    out_path = Path(args.output)
    skipped, written = 0, 0
    with atomic_open(out_path) as f, tqdm(total=len(studies), desc="generating", unit="study", disable=None) as bar:
        for start in range(0, len(studies), args.batch_size):
            ids, fronts, lats = [], [], []
            for s in studies[start:start + args.batch_size]:
                try:
                    fronts.append(load_image(s.frontal.path, size))
                    lats.append(load_image(s.lateral.path, size) if s.lateral and s.lateral.path else None)
                    ids.append(s.id)
                except ImageError as e:
                    skipped += 1
                    _logger.warning("skipping study %s: %s", s.id, e)
            if ids:
                for sid, out in zip(ids, gen.generate_batch(fronts, lats, return_attention=False, **decode)):
                    f.write(json.dumps({"id": sid, "report": out["report"]}) + "\n")
                    written += 1
            bar.update(len(studies[start:start + args.batch_size]))
    print(f"{written} predictions written to {out_path}" + (f" ({skipped} studies skipped: unreadable image)" if skipped else ""))
    return 0


def _generate(args) -> int:
    from cxrgen.models.generator import ReportGenerator

    if args.method == "retrieval":  # CXR-RePaiR-style baseline (cxrgen.retrieval)
        from cxrgen.commands.clip import run_retrieval

        if not args.clip:
            raise UserError("--method retrieval needs --clip DIR")
        return run_retrieval(args.clip, args.data, args.split, args.output, args.k)
    if not args.model:
        raise UserError("--model is required (or use --method retrieval --clip DIR)")
    if bool(args.image) == bool(args.data):
        raise UserError("give either --image FRONTAL.png or --data SPEC --output PREDICTIONS.jsonl")
    gen = ReportGenerator.from_pretrained(args.model, device=args.device)
    decode = {k: v for k, v in (("beam_size", args.beam), ("max_len", args.max_len),
                                ("length_penalty", args.length_penalty)) if v is not None}
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
    p.add_argument("--data", help="dataset spec, e.g. phantom:DIR; writes JSONL {id, report}")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    p.add_argument("--output", help="predictions JSONL path (with --data)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam", type=int, help="beam size (default from the model's config; 1 = greedy)")
    p.add_argument("--max-len", type=int, help="maximum report length in tokens")
    p.add_argument("--length-penalty", type=float,
                   help="beam search ranks by log p / length ** this (default from the model's config)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=_generate)
