"""Report generation speed: single-study latency (greedy and beam 3) and batched throughput.

Usage: .venv/bin/python bench/generate_speed.py --model runs/NAME/model --data phantom:DIR
           [--split test] [--n 8] [--batch-size 16] [--threads 2] [--device cpu] [--json OUT] [--profile]

Latency is `ReportGenerator.generate(frontal, lateral)` end to end (resize, encoder on both
views, decoding, attention map), i.e. what one web request costs, median over `--n` studies, for
the decoder's top beam and for the reranked draft (`decode.rerank`, the default; with a report bank).
Throughput is `generate_batch` on `--batch-size` studies at once. With `--run` pointing at a
`cxrgen train` output folder, the training samples/s it recorded is printed beside them.
Where bfloat16 is native (`cxrgen.precision`: the generator's default there), the beam-3 latency
and throughput are also timed in float32, and the ratios printed.
Goal: single-study beam-3 latency, reranking included, under 0.5 s on a CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, machine_facts, write_json  # noqa: E402


def load_pairs(spec: str, split: str, n: int, size: int):
    from cxrgen.data.specs import load_studies
    from cxrgen.data.images import load_image

    studies = [s for s in load_studies(spec, split) if s.frontal is not None and s.frontal.path][:n]
    return [(load_image(s.frontal.path, size), load_image(s.lateral.path, size) if s.lateral and s.lateral.path else None)
            for s in studies]


def latency(gen, pairs, beam: int) -> dict[bool, tuple[float, float]]:
    """{rerank: (median seconds per study, mean report length in words)} for one study at a time, the
    decoder's top beam (False) and the reranked draft (True) timed alternately on each study, so that
    their ratio holds on a busy machine."""
    for rerank in (False, True):
        gen.generate(*pairs[0], beam_size=beam, rerank=rerank)  # warm-up: first-call allocations, the bank's caches
    times: dict[bool, list[float]] = {False: [], True: []}
    words: dict[bool, list[int]] = {False: [], True: []}
    for frontal, lateral in pairs:
        for rerank in (False, True):
            t = time.perf_counter()
            out = gen.generate(frontal, lateral, beam_size=beam, rerank=rerank)
            times[rerank].append(time.perf_counter() - t)
            words[rerank].append(len(out["report"].split()))
    return {r: (statistics.median(times[r]), statistics.mean(words[r])) for r in (False, True)}


def throughput(gen, pairs, beam: int, batch_size: int) -> float:
    """Studies per second for one batch of `batch_size` studies (pairs cycled to fill it)."""
    batch = [pairs[i % len(pairs)] for i in range(batch_size)]
    fronts, lats = [f for f, _ in batch], [lat for _, lat in batch]
    gen.generate_batch(fronts[:2], lats[:2], beam_size=beam, return_attention=False)  # warm-up (reranked: the default)
    t = time.perf_counter()
    gen.generate_batch(fronts, lats, beam_size=beam, return_attention=False)
    return batch_size / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="dataset spec with images, e.g. phantom:DIR")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=8, help="studies timed one at a time")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--run", help="a `cxrgen train` output folder: report its training samples/s")
    p.add_argument("--json")
    p.add_argument("--profile", action="store_true", help="also print where beam-3 latency goes (cProfile)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from cxrgen.inference import ReportGenerator

    gen = ReportGenerator.from_pretrained(args.model, device=args.device)
    pairs = load_pairs(args.data, args.split, args.n, gen.config.model.image_size)
    results: dict = {"machine": machine_facts(), "encoder": gen.config.model.encoder,
                     "image_size": gen.config.model.image_size, "studies": len(pairs), "bf16": gen.bf16}
    for beam in (1, 3):
        for rerank, (sec, words) in latency(gen, pairs, beam).items():
            name = f"beam{beam}" + ("_reranked" if rerank else "")
            results[f"latency_s_{name}"] = sec
            results[f"words_{name}"] = words
        results[f"rerank_latency_ratio_beam{beam}"] = results[f"latency_s_beam{beam}_reranked"] / results[f"latency_s_beam{beam}"]
        results[f"throughput_studies_per_s_beam{beam}_bs{args.batch_size}"] = throughput(gen, pairs, beam, args.batch_size)
    if gen.bf16:  # the same model in float32, for the ratio
        gen.bf16 = False
        results["latency_s_beam3_reranked_fp32"] = latency(gen, pairs, 3)[True][0]
        results[f"throughput_studies_per_s_beam3_bs{args.batch_size}_fp32"] = throughput(gen, pairs, 3, args.batch_size)
        gen.bf16 = True
        results["bf16_speedup_latency_beam3_reranked"] = results["latency_s_beam3_reranked_fp32"] / results["latency_s_beam3_reranked"]
        results["bf16_speedup_throughput_beam3"] = (results[f"throughput_studies_per_s_beam3_bs{args.batch_size}"]
                                                    / results[f"throughput_studies_per_s_beam3_bs{args.batch_size}_fp32"])
    if args.run:
        summary = json.loads((Path(args.run) / "train_summary.json").read_text())
        results["train_samples_per_s"] = summary["train_samples_per_s"]
    m = results["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {args.threads}, load {m['load_avg_1min']}; "
          f"encoder {results['encoder']} at {results['image_size']} px, {len(pairs)} studies, "
          f"{'bfloat16' if gen.bf16 else 'float32'}\n")
    print("| measure | value |\n|---|---|")
    for key, value in results.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "studies":
            print(f"| {key} | {fmt(value)} |")
    write_json(args.json, results)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(latency, gen, pairs, 3)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
