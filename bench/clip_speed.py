"""Cost of the directional loss: a training epoch with CE + lambda * L_dir against a CE-only epoch.

Usage: .venv/bin/python bench/clip_speed.py [--batch-size 32] [--steps 6] [--threads 2]

The seed's CLIP term cost 13-25x a CE epoch (it decoded, detokenised and re-encoded strings).
Here an optimisation step is `GeneratorModule.model_step` + backward + AdamW, exactly what
Lightning's training_step runs, in the frozen-feature mode the experiment uses (cached
encoder tokens, default decoder). Batches hold real IU findings (torchxrayvision wheel) and
random encoder features (speed does not depend on pixel values). Every configuration runs on
the same batches, interleaved step by step. Steps are timed in process CPU seconds (all threads),
because wall time on a shared machine mostly measures other people's load; the reported
ratio is the median step CPU time over the CE-only median. "first epoch" includes the one-off
E_T(r) cache fill (one no-grad MiniLM pass per study), "later epochs" reuse it.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def build(batch_size: int, n_batches: int):
    from cxrgen.config import Config
    from cxrgen.data.iu import load_iu_reports
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.clip import ClipConfig, CXRClip
    from cxrgen.models.generator import ReportModel
    from cxrgen.training.module import GeneratorModule

    cfg = Config()
    cfg.model.pretrained = False
    texts = [s.findings for s in load_iu_reports() if s.findings]
    tok = ReportTokenizer.build(texts[:2000])
    model = ReportModel(cfg.model, len(tok))
    module = GeneratorModule(model, tok, cfg)
    with torch.no_grad():
        n_tok = model.encoder(torch.zeros(1, 1, cfg.model.image_size, cfg.model.image_size)).shape[1:]
    g = torch.Generator().manual_seed(0)
    batches = []
    for b in range(n_batches):
        chunk = texts[b * batch_size:(b + 1) * batch_size]
        ids, mask = tok.batch_encode(chunk, cfg.model.max_len)
        batches.append({"study_id": [f"s{b}-{i}" for i in range(batch_size)], "report_ids": ids, "report_mask": mask,
                        "features": torch.randn(batch_size, 2, *n_tok, generator=g),
                        "view_mask": torch.ones(batch_size, 2, dtype=torch.bool),
                        "labels": torch.zeros(batch_size, 14), "label_mask": torch.ones(batch_size, 14)})
    clip = CXRClip(ClipConfig(image_encoder=cfg.model.encoder), pretrained=False)
    image_emb = {sid: e for bt in batches for sid, e in
                 zip(bt["study_id"], F.normalize(torch.randn(batch_size, clip.cfg.embed_dim, generator=g), dim=-1))}
    return module, clip, batches, image_emb


def step_fn(module, hook):
    opt = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=1e-4)

    def step(batch) -> float:
        module.extra_losses = [hook] if hook else []
        t0 = time.process_time()  # CPU seconds of this process: robust to other users' load, unlike wall time
        losses, _ = module.model_step(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        return time.process_time() - t0

    return step


def main() -> None:
    from cxrgen.training.hooks import DirectionalHook

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="batches per configuration per pass")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fractions", default="1.0,0.25,0.125", help="DirectionalHook row_fraction values")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module, clip, batches, image_emb = build(args.batch_size, args.steps)
    module.train()
    configs = {"CE only": None}
    for f in map(float, args.fractions.split(",")):
        configs[f"CE + directional (rows {f:g})"] = DirectionalHook(clip, 0.1, image_emb, row_fraction=f)
    steps = {name: step_fn(module, hook) for name, hook in configs.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"first epoch": [], "later epochs": []} for name in configs}
    for phase in ("first epoch", "later epochs"):  # the first pass fills each hook's E_T(r) cache
        for batch in batches:
            for name, step in steps.items():
                times[name][phase].append(step(batch))
    base = {ph: statistics.median(times["CE only"][ph]) for ph in ("first epoch", "later epochs")}
    rows = {name: {ph: {"median_step_s": statistics.median(t), "ratio_vs_ce": statistics.median(t) / base[ph]}
                   for ph, t in per.items()} for name, per in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}, batch "
          f"{args.batch_size}, {args.steps} steps per configuration and phase")
    print("| configuration | first epoch: CPU s/step | ratio | later epochs: CPU s/step | ratio |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        f, l = r["first epoch"], r["later epochs"]
        print(f"| {name} | {f['median_step_s']:.3f} | {f['ratio_vs_ce']:.2f} | {l['median_step_s']:.3f} | "
              f"{l['ratio_vs_ce']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
