"""`cxrgen generate`: reports for one study (printed) or a whole split (JSONL for `cxrgen eval`).

Arguments, the model folder and the images are checked before torch is imported, so a mistake is
reported in well under a second; only then is the model loaded.
"""
from __future__ import annotations

import argparse
import json
import os

from cxrgen.errors import UserError

UNLIKE = "This image is unlike the images this model was trained on; the draft is not meaningful"

JSON_FIELDS = """\
--json prints one object:
  report         the draft findings (text)
  probabilities  {condition: probability} for the 14 CheXpert conditions, from the model's classifier
  calls          the conditions the classifier calls present at its tuned thresholds
  sides          {condition: "left" | "right" | "bilateral"}: where the image shows each called
                 condition that the model has a side model for
  extras         {finding: probability} for the findings outside the 14 that the model reads from
                 the images (the labeler's terms, e.g. "degenerative changes"); called at 0.5
  unstated       called conditions that the draft does not state (empty when they agree)
  uncalled       conditions the draft states that the classifier does not call (empty when they agree)
  ood            one {view, score, threshold, flag} per view given (frontal first): flag is true when
                 the image is unlike the model's training images; null when the model has no
                 training statistics (add them with `cxrgen model calibrate`)
  attention      only with --attention: a square grid (rows top to bottom) over the frontal image,
                 where the decoder looked while writing (the last layer's cross-attention, averaged
                 over heads and words, scaled to a maximum of 1)
  disclaimer     the research-draft notice
--data writes one {id, report, calls, sides, extras, ood} line per study."""


def flagged(ood: list[dict] | None) -> list[dict]:
    """The views whose OOD verdict is a flag (none when there is no verdict)."""
    return [v for v in ood or [] if v["flag"]]


def why(views: list[dict]) -> str:
    return ", ".join(f"{v['view']} score {v['score']:.1f} > threshold {v['threshold']:.1f}" for v in views)


def _read_views(args):
    """The frontal and optional lateral image as arrays (numpy and PIL only: no torch yet)."""
    from cxrgen.data.images import ImageError, load_image

    try:
        return load_image(args.image), load_image(args.lateral) if args.lateral else None
    except ImageError as e:
        raise UserError(str(e)) from None


def _single(gen, views, args, decode: dict) -> int:
    from cxrgen import DISCLAIMER

    out = gen.generate(*views, return_attention=args.attention, **decode)
    bad = flagged(out["ood"])
    if bad and args.refuse_ood:
        raise UserError(f"{UNLIKE} ({why(bad)}); no draft written (--refuse-ood)")
    if args.json:
        attention = out.pop("attention")
        if args.attention:
            out["attention"] = attention.round(4).tolist()
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


def _split(gen, studies, args, decode: dict) -> int:
    from cxrgen.inference import generate_for_studies
    from cxrgen.io import write_jsonl

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
            yield {"id": s.id, "report": out["report"], "calls": out["calls"], "sides": out["sides"], "extras": out["extras"],
                   "ood": out["ood"]}

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


def _split_studies(args) -> list:
    from cxrgen.data.specs import load_studies

    if not args.output:
        raise UserError("--data needs --output PREDICTIONS.jsonl")
    studies = [s for s in load_studies(args.data, args.split) if s.frontal is not None and s.frontal.path]
    if not studies:
        raise UserError(f"no studies with a frontal image in {args.data} (split {args.split})")
    return studies


def _generate(args) -> int:
    from cxrgen.checkpoint import check_checkpoint

    if args.attention and not args.json:
        raise UserError("--attention adds the attention grid to --json output; add --json")
    check_checkpoint(args.model)
    inputs = _read_views(args) if args.image else _split_studies(args)

    import torch

    from cxrgen.inference import ReportGenerator  # torch: only once everything above is in order

    if args.image and "OMP_NUM_THREADS" not in os.environ:
        # One study is thousands of tiny tensor operations: a second CPU thread only adds
        # synchronisation (no faster on an idle 2-core machine, several times slower on a busy one).
        torch.set_num_threads(1)
    gen = ReportGenerator.from_pretrained(args.model, device=args.device)
    gen.bf16 = gen.bf16 and not args.float32
    if not args.extras:
        gen.extras = None
    decode = {k: v for k, v in (("beam_size", args.beam), ("max_len", args.max_len),
                                ("length_penalty", args.length_penalty), ("rerank", args.rerank)) if v is not None}
    decode["skip_flagged"] = args.refuse_ood  # a flagged image is not decoded at all
    return _single(gen, inputs, args, decode) if args.image else _split(gen, inputs, args, decode)


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate reports from images (one study, or a dataset split to JSONL)",
                       description="Draft findings for one study (--image) or every study of a dataset split\n"
                                   "(--data, written as JSONL for `cxrgen eval`). Research prototype: a draft, "
                                   "not a diagnosis.",
                       epilog=JSON_FIELDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory (e.g. runs/NAME/model)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="frontal image (PNG, JPEG or DICOM): print its draft")
    what.add_argument("--data", help="dataset spec, e.g. phantom:DIR: write {id, report, calls, ood} lines to --output")
    p.add_argument("--lateral", help="with --image: lateral image of the same study (optional)")
    p.add_argument("--json", action="store_true", help="with --image: print the fields below as JSON")
    p.add_argument("--attention", action="store_true", help="with --json: add the attention grid")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    p.add_argument("--output", help="predictions JSONL path (with --data)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam", type=int, help="beam size (default from the model's config; 1 = greedy)")
    p.add_argument("--max-len", type=int, help="maximum report length in tokens")
    p.add_argument("--length-penalty", type=float,
                   help="beam search ranks by log p / length ** this (default from the model's config)")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the candidate (the beams, plus the model's report bank for the called findings) whose "
                        "findings agree best with the classifier's calls (default from the model's config)")
    p.add_argument("--extras", action=argparse.BooleanOptionalAction, default=True,
                   help="with reranking, prefer the draft that states the findings outside the 14 that the model reads "
                        "(degenerative changes, granuloma, ...; default on where the model has them)")
    p.add_argument("--refuse-ood", action="store_true",
                   help="write no draft for an image unlike the model's training images (exit 2 for --image; "
                        'for --data a row with an empty report and "refused": "ood"); by default it gets its draft '
                        "and a warning")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--float32", action="store_true",
                   help="decode in float32 where bfloat16 is native (the default there: cxrgen.precision)")
    p.set_defaults(func=_generate)
