"""`cxrgen model`: what a checkpoint is (`card`, `record-metrics`) and what it keeps from its training
data (`calibrate`: the OOD check's statistics and the report bank)."""
from __future__ import annotations

import json

from cxrgen.errors import UserError


def _calibrate(args) -> int:
    from cxrgen.checkpoint import check_checkpoint
    from cxrgen.data.specs import load_studies

    if not 0 < args.quantile < 1:  # before minutes of encoding
        raise UserError(f"--quantile must be between 0 and 1, got {args.quantile}")
    check_checkpoint(args.model)
    studies = load_studies(args.data)

    from cxrgen.bank import add_bank
    from cxrgen.checkpoint import load_checkpoint  # torch: only once the model folder and data are in order
    from cxrgen.data.loader import assign_splits
    from cxrgen.data.reports import target_text
    from cxrgen.inference import calibrate, study_images

    model, tokenizer, config, _ = load_checkpoint(args.model)
    assign_splits(studies)  # the same split training used for studies without one
    train, val = ([s for s in studies if s.split == k] for k in ("train", "val"))
    if not train or not val:
        raise UserError(f"{args.data} needs training and validation studies (found {len(train)} and {len(val)})")
    size = config.model.image_size
    stats = calibrate(model, study_images(train, size), study_images(val, size), args.quantile,
                      args.batch_size, args.device)
    stats.save(args.model)
    for name, v in stats.meta()["views"].items():
        print(f"{name}: threshold {v['threshold']:.2f} (validation {100 * args.quantile:g}th percentile of "
              f"{v['val_images']} images; fitted on {v['train_images']} training images)")
    reports = [target_text(s) for s in train if target_text(s)]
    bank = add_bank(args.model, reports, tokenizer, config.model.max_len)
    if bank is not None:
        print(f"report bank: {len(bank.sets)} finding sets from {len(reports)} training reports")
    print(f"written to {args.model}")
    return 0


def _record_metrics(args) -> int:
    from cxrgen.checkpoint import update_meta

    try:
        systems = json.loads(open(args.metrics, encoding="utf-8").read())
    except ValueError as e:
        raise UserError(f"{args.metrics} is not a metrics.json of `cxrgen eval` ({e})") from None
    if not isinstance(systems, dict) or args.system not in systems:
        names = ", ".join(systems) if isinstance(systems, dict) else "none"
        raise UserError(f"{args.metrics} has no system {args.system!r} (it has: {names})")
    metrics = {name: round(float(m["value"]), 4) for name, m in systems[args.system].items()
               if isinstance(m, dict) and isinstance(m.get("value"), (int, float))}
    update_meta(args.model, test_metrics={"split": args.split, **metrics})
    print(f"{len(metrics)} {args.split} metrics of {args.system} recorded in {args.model}/meta.json")
    return 0


def _card(args) -> int:
    from cxrgen.checkpoint import model_card, read_meta

    print(json.dumps(model_card(read_meta(args.model)), indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("model", help="a checkpoint's card, and what it keeps from its training data")
    cmds = p.add_subparsers(dest="model_command", required=True)
    c = cmds.add_parser("calibrate", help="add what inference reads from the training data (the OOD check's "
                                          "statistics, the report bank) to a checkpoint",
                        description="Fit, per view, the mean and shrunk covariance of the training images' "
                                    "encoder features and set the flag threshold at a quantile of the "
                                    "validation images' scores; group the training reports by finding set "
                                    "(the report bank that reranking offers the decoder). Writes "
                                    "MODEL/ood.safetensors, MODEL/bank.json and meta.json. Training writes both itself.")
    c.add_argument("--model", required=True, help="checkpoint directory")
    c.add_argument("--data", required=True, help="the dataset spec the model was trained on, e.g. phantom:DIR")
    c.add_argument("--quantile", type=float, default=0.99,
                   help="flag threshold: this quantile of the validation scores (default 0.99)")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    c.set_defaults(func=_calibrate)
    r = cmds.add_parser("record-metrics", help="record a `cxrgen eval` result in the model card")
    r.add_argument("--model", required=True, help="checkpoint directory")
    r.add_argument("--metrics", required=True, help="metrics.json written by `cxrgen eval --output DIR`")
    r.add_argument("--system", required=True, help="which system of it is this model (the predictions file's stem)")
    r.add_argument("--split", default="test", help="the split it was evaluated on (default test)")
    r.set_defaults(func=_record_metrics)
    k = cmds.add_parser("card", help="print what the model was trained on, when, and its OOD check (JSON)")
    k.add_argument("--model", required=True, help="checkpoint directory")
    k.set_defaults(func=_card)
