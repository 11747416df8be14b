"""bfloat16 where it is native: the probe answers for every device, and a model reads the same in both precisions."""
from __future__ import annotations

import numpy as np
import torch

from cxrgen.precision import autocast, bf16_is_fast


def test_the_probe_answers_for_any_device():
    assert bf16_is_fast("meta") is False
    assert isinstance(bf16_is_fast("cpu"), bool)
    with autocast("cpu", enabled=False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("cpu", enabled=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_a_generator_under_bf16_agrees_with_float32(tiny_model):
    """The same checkpoint, served with and without bfloat16 autocast: finding probabilities within
    bfloat16's rounding, and both results whole (reports are text, probabilities float)."""
    from cxrgen.inference import ReportGenerator

    image = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    results = {}
    for bf16 in (False, True):
        gen = ReportGenerator.from_pretrained(tiny_model)
        gen.bf16 = bf16
        results[bf16] = gen.generate(image, image, beam_size=3)
    for r in results.values():
        assert isinstance(r["report"], str) and all(isinstance(p, float) for p in r["probabilities"].values())
    full, half = (np.array(list(results[k]["probabilities"].values())) for k in (False, True))
    assert np.abs(full - half).max() < 0.02
