"""Training throughput (samples/s) of cxrgen's own step: frozen cached features or fine-tuning,
cross-entropy only or cross-entropy plus the differentiable CLIP directional loss.

Usage: .venv/bin/python bench/train_speed.py [--config configs/X.yaml] [--batch-size 16] [--steps 3] [--device cpu] [--json OUT]

One optimisation step = `GeneratorModule.model_step` (exactly what Lightning's training_step
calls) + backward + AdamW. The model is `--config`'s (without it, the built-in defaults:
EfficientNet-Lite0 at 224 px, d_model 256, 3 decoder layers), random weights: speed does not
depend on them. Report text is
real IU findings; image pixels are noise. The directional loss's constant terms E_I(x) and
E_T(r) are precomputed once per dataset (the DirectionalHook cache), and that one-off cost
is reported too.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, machine_facts, peak_rss_mb, time_it, write_json  # noqa: E402


@dataclass
class Setup:
    module: object  # cxrgen.training.module.GeneratorModule
    tokenizer: object
    batch: dict  # frozen-feature batch
    images: torch.Tensor  # (B, 2, 1, H, W) uint8, for fine-tuning
    hook: object | None  # DirectionalHook with precomputed references
    precompute_s: float  # seconds to precompute E_I(x) and E_T(r) for one batch


def reports(n: int) -> list[str]:
    from cxrgen.data.iu import load_iu_reports

    texts = [s.findings for s in load_iu_reports() if s.findings]
    return [texts[i % len(texts)] for i in range(n)]


def build(batch_size: int, device: str = "cpu", with_clip: bool = True, config: str | None = None) -> Setup:
    """Model, tokenizer, one batch of each kind and (optionally) the directional hook, on `device`."""
    from cxrgen.config import load_config
    from cxrgen.data.tokenizer import ReportTokenizer
    from cxrgen.models.generator import ReportModel
    from cxrgen.training.module import GeneratorModule

    cfg = load_config(config, ["model.pretrained=false"])
    image_size = cfg.model.image_size
    texts = reports(batch_size)
    tok = ReportTokenizer.build(reports(2000))
    model = ReportModel(cfg.model, len(tok)).to(device)
    module = GeneratorModule(model, tok, cfg).to(device)
    ids, mask = tok.batch_encode(texts, cfg.model.max_len)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 2, 1, image_size, image_size), generator=g, dtype=torch.uint8)
    view_mask = torch.ones(batch_size, 2, dtype=torch.bool)
    with torch.no_grad():
        feats = model.encode_views(images.to(device).float() / 255, view_mask.to(device))
    batch = {"study_id": [f"s{i}" for i in range(batch_size)], "report_ids": ids, "report_mask": mask.bool(),
             "labels": torch.zeros(batch_size, 14), "label_mask": torch.ones(batch_size, 14), "view_mask": view_mask,
             "features": feats.cpu().half()}  # float16, as the feature cache and the loader deliver them
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    hook, pre = None, 0.0
    if with_clip:
        from cxrgen.training.hooks import DirectionalHook
        from cxrgen.models.clip import CXRClip

        clip = CXRClip(pretrained=False).to(device)
        t = time.perf_counter()
        with torch.no_grad():  # the constant CLIP terms, once per dataset: E_I(x), then the hook caches E_T(r)
            img = clip.encode_image(images[:, 0].to(device).float() / 255)
            hook = DirectionalHook(clip, weight=1.0, image_emb=dict(zip(batch["study_id"], img)))
            hook(module, batch, torch.zeros(batch_size, ids.shape[1] - 1, len(tok), device=device))
        pre = time.perf_counter() - t
    return Setup(module, tok, batch, images, hook, pre)


@dataclass
class GpuPath:
    """The fast-path switches `bash bench/gpu.sh` turns on (they are no-ops or slow on a CPU)."""
    bf16: bool = False  # torch.autocast(bfloat16), what Lightning's precision="bf16-mixed" does
    compile: bool = False  # torch.compile the encoder and the decoder


def make_step(s: Setup, mode: str, directional: bool, device: str = "cpu", fast: GpuPath = GpuPath()):
    """A closure running one optimisation step in `mode` ("frozen" or "finetune")."""
    module, model = s.module, s.module.model
    module.extra_losses = [s.hook] if directional else []
    model.encoder.requires_grad_(mode == "finetune")
    model.train()
    if fast.compile and not hasattr(model, "_compiled"):
        model.encoder, model.decoder = torch.compile(model.encoder), torch.compile(model.decoder)
        model._compiled = True
    batch = dict(s.batch)
    if mode == "finetune":
        del batch["features"]
        batch["image"] = s.images.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.startswith("cuda"))
    kind = device.split(":")[0]

    def step() -> None:
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=fast.bf16):
            losses, _ = module.model_step(batch)
        losses["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def count_flops(step) -> float:
    """FLOPs of one call of `step` (matmuls and convolutions, forward and backward); the call doubles as warm-up."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def measure(batch_size: int, finetune_batch_size: int, steps: int, device: str = "cpu", fast: GpuPath = GpuPath(),
            config: str | None = None) -> dict:
    s = build(batch_size, device, config=config)
    rows = {}
    for mode, bs in (("frozen", batch_size), ("finetune", finetune_batch_size)):
        if bs <= 0:
            continue
        sub = s if bs == batch_size else shrink(s, bs)
        for directional in (False, True):
            name = f"{mode}, CE" + (" + directional" if directional else "")
            step = make_step(sub, mode, directional, device, fast)
            if fast.compile:
                step()  # compile outside the FLOP counter
            flops = count_flops(step)
            sec = time_it(step, repeat=steps, warmup=0, device=device)
            rows[name] = {"batch_size": bs, "step_s": sec, "samples_per_s": bs / sec, "gflops": flops / sec / 1e9}
    return {"config": config or "built-in defaults", "batch_size": batch_size, "rows": rows, "clip_precompute_s_per_sample": s.precompute_s / batch_size,
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "fast_path": fast.__dict__,
            "gpu_peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}


def shrink(s: Setup, n: int) -> Setup:
    """The first n samples of a setup's batch (fine-tuning is costlier per sample on a CPU)."""
    batch = {k: v[:n] for k, v in s.batch.items()}
    return Setup(s.module, s.tokenizer, batch, s.images[:n], s.hook, s.precompute_s)


def markdown(r: dict) -> str:
    on = [k for k, v in r["fast_path"].items() if v]
    lines = [f"Model config: {r['config']}; {r['threads']} torch thread(s), median of timed steps after one warm-up step"
             + (f"; {', '.join(on)} on" if on else "") + ". GFLOP/s: matmul and convolution FLOPs of one step "
             "(torch.utils.flop_counter) over its time.", "",
             "| step | batch | s/step | samples/s | GFLOP/s |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['batch_size']} | {fmt(v['step_s'])} | {fmt(v['samples_per_s'])} | {fmt(v['gflops'])} |"
              for k, v in r["rows"].items()]
    fr = r["rows"]
    lines += ["", f"- Cost of the directional loss (frozen): x{fmt(fr['frozen, CE']['samples_per_s'] / fr['frozen, CE + directional']['samples_per_s'])} "
              "the CE-only step time" + (f"; fine-tuning: x{fmt(fr['finetune, CE']['samples_per_s'] / fr['finetune, CE + directional']['samples_per_s'])}"
                                          if "finetune, CE" in fr else "") + ".",
              f"- One-off precompute of the constant CLIP terms E_I(x), E_T(r): {fmt(r['clip_precompute_s_per_sample'] * 1000)} ms/sample "
              "(once per dataset, not per epoch).",
              f"- Peak RSS of this benchmark process: {fmt(r['peak_rss_mb'])} MB"
              + (f"; peak GPU memory {fmt(r['gpu_peak_mem_mb'])} MB." if r.get("gpu_peak_mem_mb") else ".")]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config whose model to time (default: the built-in defaults)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--finetune-batch-size", type=int, default=8, help="0 skips fine-tuning")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile encoder and decoder")
    p.add_argument("--json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = GpuPath(args.bf16, args.compile)
    r = measure(args.batch_size, args.finetune_batch_size, args.steps, args.device, fast, args.config)
    r["machine"] = machine_facts()
    write_json(args.json, r)
    print(markdown(r))


if __name__ == "__main__":
    main()
