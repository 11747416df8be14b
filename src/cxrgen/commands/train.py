"""`cxrgen train`: fit a report generator from a YAML config on any dataset spec."""
from __future__ import annotations

from pathlib import Path


def _train(args) -> int:
    from cxrgen.config import load_config
    from cxrgen.data.specs import load_studies

    overrides = list(args.set)
    for flag, key in (("epochs", "train.epochs"), ("seed", "train.seed"), ("mode", "train.mode"),
                      ("encoder", "model.encoder"), ("encoder_weights", "model.encoder_weights"),
                      ("batch_size", "train.batch_size")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    output = Path(args.output)
    # --resume alone continues with the run's own saved config; fit() refuses one that differs
    config_path = args.config or (output / "config.yaml" if args.resume else "configs/default.yaml")
    config = load_config(config_path, overrides)
    studies = load_studies(args.data)

    from cxrgen.training.fit import fit  # torch and Lightning: only once the config and data are in order

    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    result = fit(config, studies, output, cache_dir=args.cache_dir, accelerator=args.accelerator,
                 devices=devices, num_nodes=args.num_nodes, strategy=args.strategy, resume=args.resume,
                 data=args.data)
    best = "n/a" if result.best_value is None else f"{result.best_value:.4f} (epoch {result.best_epoch})"
    print(f"best {result.best_metric}: {best}; {result.epochs_run} epoch(s), "
          f"{result.train_samples_per_s:.1f} training samples/s")
    print(f"checkpoint: {result.model_dir}")
    print(f"loss curve: {output / 'loss_curve.png'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a report generator (frozen-feature or end-to-end)")
    p.add_argument("--config", help="YAML config (default configs/default.yaml; with --resume, OUTPUT/config.yaml)")
    p.add_argument("--data", required=True, help="dataset spec, e.g. phantom:DIR, iu-xray-r2gen:DIR, mimic:DIR, manifest:CSV")
    p.add_argument("--output", required=True, help="run folder; the checkpoint goes to OUTPUT/model")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT from OUTPUT/last.ckpt (written after every epoch), e.g. after a crash")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set model.d_model=256 (repeatable)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--mode", choices=("frozen", "finetune"), help="override train.mode")
    p.add_argument("--batch-size", type=int, help="override train.batch_size")
    p.add_argument("--encoder", help="override model.encoder (see configs/README or cxrgen.models.list_encoders)")
    p.add_argument("--encoder-weights", help="local weight file for the encoder (timm state dict)")
    p.add_argument("--cache-dir", help="image/feature cache folder (default OUTPUT/../.cache, shared by runs)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    p.add_argument("--devices", default="auto", help="Lightning devices (number or 'auto')")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    p.set_defaults(func=_train)
