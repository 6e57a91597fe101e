"""MedMNIST-C's 2D corruptions (Di Salvo et al., 2024), applied to batches of 28 px uint8 images.

Each corruption is MedMNIST-C's (package `medmnistc` 0.1.0, `corruptions/registry.py`): the same
operation, the same five severity parameters per dataset, applied as its `DatasetManager` applies
them to a grayscale set: to the image's RGB copy, the result converted back with Pillow's L
conversion. Parameters are used as MedMNIST-C states them, in pixels of the image they are
applied to: here the 28 px images (MedMNIST-C applies them to the 224 px release, so the blurs
are about 8x wider relative to the image here, and a JPEG block covers more of it).

`medmnistc` itself is not a dependency: it pins medmnist 3.0.1 and scikit-image 0.23.2 (this
stack has newer ones), needs ImageMagick's C library through Wand for one corruption, and its
motion blur fails under NumPy 2 (`np.fromstring`). What is computed how:

- by the libraries MedMNIST-C calls: JPEG (Pillow, per image, on the CPU), Gaussian blur
  (torchvision's kernel, batched on the device); brightness, contrast and gamma are lookup
  tables built by calling Pillow's `ImageEnhance` and torchvision's `adjust_gamma` on the 256 gray
  levels, then indexed on the device, so they equal MedMNIST-C's output exactly;
- written here, because the library operation runs per PIL image: pixelate (Pillow's BOX
  resampling as two small fixed-point matrices, `box_weights`), the four noises (MedMNIST-C's formulas on the
  RGB copy, each channel its own draw, float64 as NumPy, then Pillow's L conversion `luma`), and
  the motion blur (ImageMagick's MotionBlurImage kernel: a one-sided Gaussian along a random
  angle in [-45, 45] degrees, edge pixels repeated, Q16 rounding; `motion_blur`).

Every function takes a uint8 batch (N, H, W) on any device and a CPU `torch.Generator` for its
random draws (so a seed gives the same images on every device) and returns a uint8 batch of the
same shape on the same device. `tests/test_robustness.py` checks each against Pillow or a
formula written out plainly.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

SEVERITIES = 5

Apply = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption of a dataset's list: its name, family, operation and five severity parameters."""

    name: str
    family: str
    op: Apply
    params: tuple[Any, ...]

    def __call__(self, images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
        """Return `images` corrupted at `severity` (1 to 5), drawing from `generator`."""
        if not 1 <= severity <= len(self.params):
            raise ValueError(f"severity must be from 1 to {len(self.params)}, got {severity}")
        return self.op(images, self.params[severity - 1], generator)


# --- what the RGB copy does to a gray image -------------------------------------------------


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """Return Pillow's L conversion of uint8 RGB (N, 3, H, W): (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)


def _on_rgb_copy(images: torch.Tensor, noisy: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Return MedMNIST-C's pipeline for a per-pixel random corruption of a gray image.

    The image in [0, 1] (float64, as NumPy's img / 255.), three channels drawn independently,
    clipped, scaled by 255 and truncated (NumPy's astype(uint8)), then Pillow's L conversion.
    """
    x = images.to(torch.float64).div(255.0).unsqueeze(1).expand(-1, 3, *images.shape[1:])
    out = noisy(x).clamp(0.0, 1.0).mul(255.0).to(torch.uint8)
    return luma(out)


def _normal(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(device)


def _uniform(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64).to(device)


# --- noise: MedMNIST-C's corruptions/noise.py ---------------------------------------------------


def gaussian_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Return clip(x + N(0, std^2)) per RGB channel, as MedMNIST-C's GaussianNoise."""
    return _on_rgb_copy(images, lambda x: x + std * _normal(x.shape, generator, x.device))


def speckle_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Return clip(x + x N(0, std^2)) per RGB channel, as MedMNIST-C's SpeckleNoise."""
    return _on_rgb_copy(images, lambda x: x + x * std * _normal(x.shape, generator, x.device))


def shot_noise(images: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    """Return clip(Poisson(x photons) / photons) per RGB channel, as MedMNIST-C's ShotNoise."""

    def noisy(x: torch.Tensor) -> torch.Tensor:
        # drawn on the CPU generator, so the same seed gives the same counts on every device
        return torch.poisson((x * photons).cpu().contiguous(), generator=generator).to(x.device) / photons

    return _on_rgb_copy(images, noisy)


def impulse_noise(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Return salt-and-pepper noise per RGB channel: a share `amount` of values set to 0 or 1 (half each).

    scikit-image's random_noise(mode='s&p', salt_vs_pepper=0.5), which MedMNIST-C's ImpulseNoise calls.
    """

    def noisy(x: torch.Tensor) -> torch.Tensor:
        flipped = _uniform(x.shape, generator, x.device) < amount
        salted = _uniform(x.shape, generator, x.device) < 0.5
        return torch.where(flipped, salted.to(x.dtype), x)

    return _on_rgb_copy(images, noisy)


# --- digital: MedMNIST-C's corruptions/compression.py ---------------------------------------------


@lru_cache(maxsize=64)
def box_weights(in_size: int, out_size: int) -> np.ndarray:
    """Return the (out_size, in_size) weights of Pillow's BOX resampling along one axis.

    Pillow's precompute_coeffs with its box filter: output pixel i averages the input pixels
    whose centres lie in (c - s/2, c + s/2], c = (i + 0.5) s, s = in/out (at least 1), equally
    weighted; upsampling is therefore nearest-neighbour.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        taps = np.array([1.0 if -0.5 < (x - center + 0.5) / filterscale <= 0.5 else 0.0 for x in range(lo, hi)])
        weights[i, lo:hi] = taps / taps.sum()
    return weights


def _box_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Return Pillow's BOX resize of uint8 (N, H, W) in its 8-bit arithmetic: the horizontal pass, then the vertical one.

    Each pass rounds its weights to 22-bit fixed point and its sums half up, as Pillow's
    ImagingResample does (float64 holds every such sum exactly), so ties round as Pillow's do.
    """
    one = float(1 << 22)

    def fixed(in_size: int, out_size: int) -> torch.Tensor:
        return torch.from_numpy(np.floor(0.5 + box_weights(in_size, out_size) * one)).to(images.device)

    x = torch.floor((images.to(torch.float64) @ fixed(images.shape[2], width).T + one / 2) / one).clamp_(0, 255)
    return torch.floor((fixed(images.shape[1], height) @ x + one / 2) / one).clamp_(0, 255).to(torch.uint8)


def pixelate(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Return the images BOX-resized to int(side * factor) and back, as MedMNIST-C's Pixelate."""
    height, width = images.shape[1:]
    small = _box_resize(images, int(height * factor), int(width * factor))
    return _box_resize(small, height, width)


def jpeg_compression(images: torch.Tensor, quality: int, generator: torch.Generator) -> torch.Tensor:
    """Return each image saved as JPEG at `quality` by Pillow and read back, as MedMNIST-C's JPEGCompression.

    A gray JPEG: MedMNIST-C compresses the RGB copy, whose equal channels give the same luma
    (checked equal on the BreastMNIST test images at every quality here).
    """
    from PIL import Image

    out = []
    for image in images.cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
        out.append(np.asarray(Image.open(buffer)))
    return torch.from_numpy(np.stack(out)).to(images.device)


# --- color and gamma: MedMNIST-C's corruptions/enhance.py -----------------------------------------


@lru_cache(maxsize=64)
def _brightness_table(factor: float) -> torch.Tensor:
    from PIL import Image, ImageEnhance

    ramp = Image.fromarray(np.arange(256, dtype=np.uint8)[None])
    return torch.from_numpy(np.asarray(ImageEnhance.Brightness(ramp).enhance(factor))[0].copy())


@lru_cache(maxsize=64)
def _contrast_table(factor: float) -> torch.Tensor:
    """Return table[m, v]: Pillow's blend of gray level m (the image's rounded mean) and v by `factor`."""
    from PIL import Image

    ramp = Image.fromarray(np.arange(256, dtype=np.uint8)[None])
    rows = [np.asarray(Image.blend(Image.new("L", ramp.size, m), ramp, factor))[0] for m in range(256)]
    return torch.from_numpy(np.stack(rows))


@lru_cache(maxsize=64)
def _gamma_table(gamma: float) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms import functional as TF

    ramp = Image.fromarray(np.arange(256, dtype=np.uint8)[None])
    return torch.from_numpy(np.asarray(TF.adjust_gamma(ramp, gamma, gain=1))[0].copy())


def brightness(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Return Pillow's ImageEnhance.Brightness(factor) of each image, as MedMNIST-C's Brightness."""
    return _brightness_table(float(factor)).to(images.device)[images.long()]


def contrast(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Return Pillow's ImageEnhance.Contrast(factor): a blend with the image's mean gray level, rounded as Pillow does."""
    mean = torch.floor(images.to(torch.float64).mean(dim=tuple(range(1, images.dim()))) + 0.5).long()
    table = _contrast_table(float(factor)).to(images.device)
    return table[mean.view(-1, *([1] * (images.dim() - 1))), images.long()]


def gamma_correction(images: torch.Tensor, gamma: float, generator: torch.Generator) -> torch.Tensor:
    """Return torchvision's adjust_gamma(gamma, gain 1) of each PIL image, as MedMNIST-C's GammaCorrection."""
    return _gamma_table(float(gamma)).to(images.device)[images.long()]


# --- blur: MedMNIST-C's corruptions/filter.py -----------------------------------------------------


def gaussian_blur(images: torch.Tensor, kernel: int, generator: torch.Generator) -> torch.Tensor:
    """Return torchvision's gaussian_blur with a kernel x kernel window (sigma 0.3 ((k - 1) / 2 - 1) + 0.8, reflect padding)."""
    from torchvision.transforms.v2 import functional as F

    return F.gaussian_blur(images.unsqueeze(1), kernel_size=[int(kernel), int(kernel)]).squeeze(1)


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """Return ImageMagick's one-sided motion-blur weights: exp(-i^2 / 2 sigma^2), i = 0 .. 2 ceil(radius), normalised."""
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i * i) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def motion_blur(images: torch.Tensor, radius_sigma: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Return ImageMagick's MotionBlurImage(radius, sigma, angle) of each image, the angle uniform in [-45, 45] degrees per image (as MedMNIST-C's MotionBlur)."""
    angles = torch.rand(len(images), generator=generator, dtype=torch.float64) * 90.0 - 45.0
    return motion_blur_at(images, *radius_sigma, angles)


def motion_blur_at(images: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """Return ImageMagick's MotionBlurImage(radius, sigma, angle) of each image at its angle (degrees).

    Tap i of the kernel reads the pixel at (x + round(i cos a), y + round(i sin a)) (rounding
    half down, as ImageMagick's ceil(v - 0.5)), coordinates outside the image clamped to the edge
    (its default virtual pixels); the sum is rounded to 16 bits and truncated back to 8, as
    ImageMagick 6.9's Q16 build writes it (equal to Wand's output on every pixel of 30 BreastMNIST
    images at severities 1 and 5). Written here: MedMNIST-C reaches this through Wand, a binding
    to ImageMagick's C library.
    """
    weights = torch.from_numpy(motion_kernel(radius, sigma)).to(images.device)
    n, height, width = images.shape
    taps = torch.arange(len(weights), dtype=torch.float64, device=images.device)
    rad = torch.deg2rad(angles.to(device=images.device, dtype=torch.float64))
    dx = torch.ceil(taps[None] * torch.cos(rad)[:, None] - 0.5).long()  # (N, taps)
    dy = torch.ceil(taps[None] * torch.sin(rad)[:, None] - 0.5).long()
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    r = (rows[None, None, :, None] + dy[:, :, None, None]).clamp(0, height - 1)  # (N, taps, H, 1)
    c = (cols[None, None, None, :] + dx[:, :, None, None]).clamp(0, width - 1)  # (N, taps, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    picked = images.to(torch.float64)[batch, r, c]  # (N, taps, H, W)
    value = torch.einsum("nthw,t->nhw", picked, weights) * 257.0  # 8-bit to Q16
    quantum = torch.floor(value + 0.5).clamp_(0, 65535)
    return torch.div(quantum, 257.0, rounding_mode="floor").to(torch.uint8)


# --- the datasets' lists: MedMNIST-C's CORRUPTIONS_DS (first five parameters of each) --------------

# MedMNIST-C's CORRUPTIONS_DS_FOLDS groups them so; gamma is "task-specific" there
FAMILIES = {
    "pixelate": "digital",
    "jpeg_compression": "digital",
    "gaussian_noise": "noise",
    "speckle_noise": "noise",
    "impulse_noise": "noise",
    "shot_noise": "noise",
    "gaussian_blur": "blur",
    "motion_blur": "blur",
    "brightness_up": "color",
    "brightness_down": "color",
    "contrast_up": "color",
    "contrast_down": "color",
    "gamma_corr_up": "task-specific",
    "gamma_corr_down": "task-specific",
}
OPS: dict[str, Apply] = {
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "gaussian_noise": gaussian_noise,
    "speckle_noise": speckle_noise,
    "impulse_noise": impulse_noise,
    "shot_noise": shot_noise,
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "brightness_up": brightness,
    "brightness_down": brightness,
    "contrast_up": contrast,
    "contrast_down": contrast,
    "gamma_corr_up": gamma_correction,
    "gamma_corr_down": gamma_correction,
}
_CHEST = {
    "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
    "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
    "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
    "shot_noise": (60, 25, 18, 10, 5),
    "gaussian_blur": (3, 5, 7, 9, 11),  # MedMNIST-C lists a sixth (13) its five severities never use
    "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
    "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}
PARAMETERS: dict[str, dict[str, tuple[Any, ...]]] = {
    "breastmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),
        "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),
        "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),
        "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "pneumoniamnist": {
        "pixelate": (0.8, 0.7, 0.6, 0.5, 0.40),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.05, 0.06, 0.07, 0.08),
        "speckle_noise": (0.05, 0.07, 0.10, 0.15, 0.20),
        "impulse_noise": (0.005, 0.01, 0.013, 0.017, 0.02),
        "shot_noise": (300, 200, 150, 100, 80),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "chestmnist": _CHEST,
}
DEFAULT_LIST = "chestmnist"  # any other 2D images (no MedMNIST-C list of their own): the chest X-ray list, the longest

# MedMNIST-C's AlexNet baseline (utils/baselines.py): balanced error on the clean test set and per
# corruption averaged over the five severities, the normalisers of its BE and rBE
ALEXNET_BASELINES: dict[str, dict[str, Any]] = {
    "breastmnist": {
        "clean": 0.14536340852130336,
        "corrupted": {
            "pixelate": 0.46127819548872184,
            "jpeg_compression": 0.2986215538847118,
            "speckle_noise": 0.38709273182957393,
            "motion_blur": 0.25902255639097743,
            "brightness_up": 0.3197994987468672,
            "brightness_down": 0.21127819548872181,
            "contrast_down": 0.15864661654135334,
        },
    },
    "pneumoniamnist": {
        "clean": 0.10085470085470083,
        "corrupted": {
            "pixelate": 0.22102564102564104,
            "jpeg_compression": 0.2798290598290598,
            "gaussian_noise": 0.4414529914529915,
            "speckle_noise": 0.3457264957264957,
            "impulse_noise": 0.4581196581196581,
            "shot_noise": 0.4106837606837607,
            "gaussian_blur": 0.2730769230769231,
            "brightness_up": 0.14649572649572645,
            "brightness_down": 0.2782051282051282,
            "contrast_up": 0.09529914529914527,
            "contrast_down": 0.23743589743589744,
            "gamma_corr_up": 0.09606837606837607,
            "gamma_corr_down": 0.16641025641025642,
        },
    },
    "chestmnist": {
        "clean": 0.2839064387513035,
        "corrupted": {
            "pixelate": 0.44895070087295996,
            "jpeg_compression": 0.34575690815860566,
            "gaussian_noise": 0.47688317292098203,
            "speckle_noise": 0.45687894795025785,
            "impulse_noise": 0.48553631547337917,
            "shot_noise": 0.4926966815396587,
            "gaussian_blur": 0.3176801263607164,
            "brightness_up": 0.2993721457134663,
            "brightness_down": 0.29711530406534037,
            "contrast_up": 0.28751004051276824,
            "contrast_down": 0.2954742427570406,
            "gamma_corr_up": 0.287462117104012,
            "gamma_corr_down": 0.2891642074561852,
        },
    },
}


def corruptions_for(task: str | None) -> dict[str, Corruption]:
    """Return MedMNIST-C's corruption list of a 2D task, in its order (ChestMNIST's for a task it does not cover)."""
    table = PARAMETERS.get(task or "", PARAMETERS[DEFAULT_LIST])
    return {name: Corruption(name, FAMILIES[name], OPS[name], params) for name, params in table.items()}
