"""No host sync in the training step: what a GPU needs, checked on the CPU.

`torch.cuda.set_sync_debug_mode` only works on CUDA, so the check here records every ATen op
the step dispatches and fails on the ones that make the host wait for the device: reading a
tensor's value (`.item()`, `int()`, `if t.any()`), and ops whose output shape depends on
tensor values (boolean-mask indexing, `nonzero`). The detector is itself tested on the
step's old code, which it must flag.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from cxrgen.config import Config
from cxrgen.data.tokenizer import ReportTokenizer
from cxrgen.training.hooks import DirectionalHook
from cxrgen.models.clip import ClipConfig, CXRClip
from cxrgen.models.generator import ReportModel
from cxrgen.testing import tiny_config
from cxrgen.training.module import GeneratorModule

REPORTS = ["The lungs are clear.", "Cardiomegaly. Small left pleural effusion.", "No pneumothorax.",
           "Right upper lobe opacity."]
_VALUE_READS = {"aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select",
                "aten.unique", "aten._unique2", "aten.repeat_interleave.Tensor"}


class HostSyncDetector(TorchDispatchMode):
    """Records the ops that would block the host on a GPU (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.split(".default")[0] in _VALUE_READS or name in _VALUE_READS:
            self.syncs.append(name)
        elif name.startswith(("aten.index.", "aten.index_put")):
            indices = args[1] if len(args) > 1 else []
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices):
                self.syncs.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


def old_encode_views(model: ReportModel, images: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
    """encode_views before the sync-free rewrite (the reference for equality, and a known sync)."""
    front = model.encoder(images[:, 0])
    feats = torch.zeros(front.shape[0], 2, *front.shape[1:], dtype=front.dtype, device=front.device)
    feats[:, 0] = front
    has_lat = view_mask[:, 1]
    if has_lat.any():
        feats[has_lat, 1] = model.encoder(images[has_lat, 1])
    return feats


def tiny_module(mode: str, directional: bool) -> tuple[GeneratorModule, dict]:
    torch.manual_seed(0)
    cfg = Config.from_dict(tiny_config(model={"dropout": 0.0}, train={"mode": mode}))
    tok = ReportTokenizer.build(REPORTS)
    model = ReportModel(cfg.model, len(tok))
    ids, mask = tok.batch_encode(REPORTS, 24)
    n = len(REPORTS)
    vm = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
    images = torch.randint(0, 256, (n, 2, 1, 32, 32), dtype=torch.uint8)
    batch = {"study_id": [f"s{i}" for i in range(n)], "report_ids": ids, "report_mask": mask.bool(),
             "labels": torch.zeros(n, 14), "label_mask": torch.ones(n, 14), "view_mask": vm}
    if mode == "frozen":
        with torch.no_grad():
            batch["features"] = model.eval().encode_views(images.float() / 255, vm).half()  # as the loader sends them
    else:
        batch["image"] = images
    hooks = []
    if directional:
        clip = CXRClip(ClipConfig(image_encoder="resnet18"), pretrained=False)
        image_emb = dict(zip(batch["study_id"], F.normalize(torch.randn(n, clip.cfg.embed_dim), dim=-1)))
        hooks.append(DirectionalHook(clip, 0.5, image_emb, row_fraction=0.5))
    module = GeneratorModule(model, tok, cfg, hooks)
    module.train()
    return module, batch


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_training_step_reads_no_tensor_value_on_the_host(mode):
    torch.set_num_threads(1)
    module, batch = tiny_module(mode, directional=True)
    hook = module.extra_losses[0]
    hook.row_fraction = 1.0
    module.model_step(batch)  # the first sight of each study fills its E_T(r) row (and the position cache)
    hook.row_fraction = 0.5  # later steps: a random half of the rows
    with HostSyncDetector() as det:
        losses, _ = module.model_step(batch)
        losses["loss"].backward()
    assert det.syncs == []
    assert torch.isfinite(losses["loss"]) and losses["directional_loss"] > 0


def test_detector_flags_the_old_lateral_encoding():
    module, batch = tiny_module("finetune", directional=False)
    images = batch["image"].float() / 255
    with HostSyncDetector() as det:
        old_encode_views(module.model, images, batch["view_mask"])
    assert any("is_nonzero" in s or "scalar" in s for s in det.syncs)
    assert any("boolean mask" in s for s in det.syncs)


def test_encode_views_equals_the_old_encoding_and_zeros_absent_laterals():
    module, batch = tiny_module("finetune", directional=False)
    model, vm = module.model.eval(), batch["view_mask"]
    images = batch["image"].float() / 255
    with torch.no_grad():
        new, old = model.encode_views(images, vm), old_encode_views(model, images, vm)
    torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)
    assert not vm[:, 1].all() and (new[~vm[:, 1], 1] == 0).all()  # exactly zero: pooled by the classifier
    assert new[vm[:, 1], 1].abs().sum() > 0
    # in training, with every lateral present, BatchNorm sees the same two batches as before
    full = torch.ones_like(vm)
    new_model, old_model = tiny_module("finetune", False)[0].model.train(), tiny_module("finetune", False)[0].model.train()
    torch.testing.assert_close(new_model.encode_views(images, full), old_encode_views(old_model, images, full))
    for a, b in zip(new_model.buffers(), old_model.buffers()):  # BatchNorm running statistics
        torch.testing.assert_close(a, b)


def test_inference_without_laterals_encodes_once():
    module, batch = tiny_module("finetune", directional=False)
    model = module.model.eval()
    images, front_only = batch["image"].float() / 255, torch.tensor([[True, False]] * len(REPORTS))
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        new = model.encode_views(images, front_only)
    assert len(calls) == 1
    torch.testing.assert_close(new, old_encode_views(model, images, front_only))


def test_grid_positions_are_built_once_and_stay_out_of_the_state_dict():
    module, batch = tiny_module("frozen", directional=False)
    model, feats, vm = module.model, batch["features"].float(), batch["view_mask"]
    keys = set(model.state_dict())
    first = model.memory_from_features(feats, vm)
    cached = dict(model._positions)
    second = model.memory_from_features(feats, vm)
    assert len(cached) == 1 and all(model._positions[k] is v for k, v in cached.items())
    torch.testing.assert_close(first.tokens, second.tokens)
    assert set(model.state_dict()) == keys  # checkpoints keep their format; old ones load strictly
    fresh = ReportModel(model.cfg, model.decoder.head.out_features)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval().memory_from_features(feats, vm).tokens,
                                   model.eval().memory_from_features(feats, vm).tokens)
