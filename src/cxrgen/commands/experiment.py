"""`cxrgen experiment CONFIG.yaml`: a multi-seed ablation (the work is in `cxrgen.training.experiment`)."""
from __future__ import annotations

from pathlib import Path

from cxrgen.errors import UserError


def _experiment(args) -> int:
    if not Path(args.config).is_file():  # before torch and Lightning are imported
        raise UserError(f"experiment file not found: {args.config}")
    if args.data:
        from cxrgen.data.specs import check_spec

        check_spec(args.data)
    from cxrgen.training.experiment import run_experiment

    out = run_experiment(args.config, args.data, args.output)
    print((out / "summary.md").read_text())
    print(f"written to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run a multi-seed ablation from a YAML file (e.g. configs/ablation_clip.yaml)")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--data", help="override the dataset spec in the YAML")
    p.add_argument("--output", help="output folder (default: the YAML's `output`, else runs/ablation_clip)")
    p.set_defaults(func=_experiment)
