"""Training-time augmentation: named presets for 2D and 3D, mixup / CutMix, label smoothing.

A preset is a per-image pipeline from a maintained library (torchvision.transforms.v2 for
2D, MONAI for 3D). The trainer hands a whole batch to `Augmenter`, which keeps it on the
device and applies the pipeline to every image with its own random draw: both libraries
draw one set of parameters per call, so calling them on a batch would flip, crop or rotate
every image of the batch identically. The per-image loop is the price of that; on CPU it
runs single-threaded (tiny per-image ops are 10x slower when two threads contend for them).

Mixup and CutMix (timm) and label smoothing then act on the batch and its targets; they
make targets soft, so they are allowed only for methods whose loss takes soft targets
(`Method.soft_targets`). Evaluation never goes through any of this: `trainer.predict`
reads the split's un-augmented images.

Images arrive normalised to [-1, 1]; the pipelines run on [0, 1] (the libraries' float
convention, so their fill value 0 is black) and the result is mapped back and clamped, so
shape, dtype and value range are unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import BenchError
from ..hparams import Choice, Float
from ..lazy import lazy_import
from ..registry import Registry
from .loader import Batch

torch = lazy_import("torch", globals())
v2 = lazy_import("torchvision.transforms.v2", globals())

Transform = Callable[["torch.Tensor"], Any]


@dataclass(frozen=True)
class Preset:
    """A named augmentation: one line of description and a builder per dimensionality (given the task where `per_task`)."""

    name: str
    summary_2d: str
    summary_3d: str
    build_2d: Callable[..., Transform]
    build_3d: Callable[..., Transform]
    per_task: bool = False

    def build(self, dims: int, task: str | None = None) -> Transform | None:
        """Return the per-image transform for 2D or 3D images of `task` (None for the identity)."""
        builder = self.build_2d if dims == 2 else self.build_3d
        return builder(task) if self.per_task else builder()


PRESETS: Registry[Preset] = Registry("augmentation preset")


def _none() -> None:
    return None


# --- 2D: torchvision.transforms.v2 on one (C, H, W) float image in [0, 1] -------------------
# Horizontal flips only: MedMNIST's 2D images have an up-down orientation (ultrasound probe at
# the top, chest X-rays upright) that a vertical flip would break.


def _flip_2d() -> Transform:
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(10)])


def _crop_2d() -> Transform:
    return v2.Compose([v2.RandomResizedCrop(28, scale=(0.7, 1.0), antialias=True), v2.RandomHorizontalFlip()])


def _affine_2d() -> Transform:
    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))


def _elastic_2d() -> Transform:
    # torchvision's defaults (alpha 50, sigma 5) move a 28 px image's pixels by 0.7 px on average
    return v2.ElasticTransform(alpha=50.0, sigma=5.0)


def _intensity_2d() -> Transform:
    from .transforms import RandomGamma

    return v2.Compose([v2.ColorJitter(brightness=0.2, contrast=0.2), RandomGamma((0.7, 1.5))])


def _strong_2d() -> Transform:
    return v2.Compose([_crop_2d(), v2.RandomRotation(10), _intensity_2d()])


# --- 3D: MONAI array transforms on one (C, D, H, W) float volume in [0, 1] -------------------


def _monai() -> Any:
    import monai.transforms as mt  # imported lazily: MONAI's transforms take a second to import

    return mt


def _flip_3d() -> Transform:
    mt = _monai()
    flips = [mt.RandFlip(prob=0.5, spatial_axis=axis) for axis in range(3)]
    turns = [mt.RandRotate90(prob=0.5, max_k=3, spatial_axes=plane) for plane in ((0, 1), (0, 2), (1, 2))]
    return mt.Compose(flips + turns)


def _crop_3d() -> Transform:
    mt = _monai()
    # a random box of 0.89-1.0 of each side (0.7-1.0 of the volume), resized back to 28^3
    return mt.Compose([mt.RandScaleCrop(roi_scale=0.7 ** (1 / 3), max_roi_scale=1.0, random_size=True), mt.Resize((28, 28, 28), mode="trilinear")])


def _affine_3d() -> Transform:
    mt = _monai()
    return mt.RandAffine(prob=1.0, rotate_range=(np.pi / 12,) * 3, scale_range=(0.1,) * 3, translate_range=(2,) * 3, padding_mode="zeros")


def _elastic_3d() -> Transform:
    mt = _monai()
    # sigma 3-5 and magnitude 50-150 displace a 28^3 volume's voxels by about 1-1.4 voxels on average
    return mt.Rand3DElastic(sigma_range=(3, 5), magnitude_range=(50, 150), prob=1.0, padding_mode="zeros")


def _intensity_3d() -> Transform:
    mt = _monai()
    return mt.Compose(
        [
            mt.RandScaleIntensity(factors=0.2, prob=1.0),  # brightness: x * U(0.8, 1.2)
            mt.RandScaleIntensityFixedMean(factors=0.2, prob=1.0),  # contrast around the volume's mean
            mt.RandAdjustContrast(gamma=(0.7, 1.5), prob=1.0),  # gamma
        ]
    )


def _strong_3d() -> Transform:
    mt = _monai()
    return mt.Compose([_flip_3d(), _affine_3d(), _intensity_3d()])


# --- corrupt: MedMNIST-C's AugMedMNIST-C, one corruption of the task's test-time list per image --


class RandomCorruption:
    """One corruption of a list, or none (AugMedMNIST-C's identity), at a random severity 1-5, per image.

    The image (C, *spatial) in [0, 1] is taken to the 8-bit gray levels the corruptions work on
    (`corruptions2d`, `corruptions3d`) and back; its channels stay equal (as_rgb). The choice,
    the severity and the corruption's own draws come from torch's generator, which `Augmenter`
    seeds per batch. AugMedMNIST-C draws each parameter uniformly between its severity-1 and
    severity-5 values; here a severity level is drawn, so training sees the test-time corruptions.
    """

    def __init__(self, dims: int, task: str | None) -> None:
        if dims == 2:
            from ..corruptions2d import corruptions_for

            self.corruptions = list(corruptions_for(task).values())
        else:
            from ..corruptions3d import corruptions

            self.corruptions = list(corruptions().values())

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, len(self.corruptions) + 1, (1,)))
        if k == len(self.corruptions):
            return image
        severity = int(torch.randint(1, len(self.corruptions[k].params) + 1, (1,)))
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        levels = image[:1].mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        out = self.corruptions[k](levels, severity, generator).to(image.dtype).div_(255.0)
        return out.expand_as(image).contiguous()


def _corrupt_2d(task: str | None) -> Transform:
    return RandomCorruption(2, task)


def _corrupt_3d(task: str | None) -> Transform:
    return RandomCorruption(3, task)


PRESETS.add("none", Preset("none", "no augmentation (the official protocol)", "no augmentation (the official protocol)", _none, _none))
PRESETS.add("flip", Preset("flip", "horizontal flip + rotation up to 10 degrees", "flips on each axis + 90-degree rotations in the three planes", _flip_2d, _flip_3d))
PRESETS.add("crop", Preset("crop", "random resized crop (scale 0.7-1.0) + horizontal flip", "random box (0.7-1.0 of the volume) resized to 28^3", _crop_2d, _crop_3d))
PRESETS.add("affine", Preset("affine", "random affine: rotation 10 deg, shift 10 %, scale 0.9-1.1", "random affine: rotation 15 deg per axis, scale 0.9-1.1, shift 2 voxels", _affine_2d, _affine_3d))
PRESETS.add("elastic", Preset("elastic", "elastic deformation (alpha 50, sigma 5)", "elastic deformation (sigma 3-5, magnitude 50-150)", _elastic_2d, _elastic_3d))
PRESETS.add("intensity", Preset("intensity", "brightness and contrast +-20 %, gamma 0.7-1.5", "brightness and contrast +-20 %, gamma 0.7-1.5", _intensity_2d, _intensity_3d))
PRESETS.add("strong", Preset("strong", "crop + flip + rotation + intensity", "flips/90-degree turns + affine + intensity", _strong_2d, _strong_3d))
PRESETS.add(
    "corrupt",
    Preset(
        "corrupt",
        "one MedMNIST-C corruption of the task's list (or none) at severity 1-5 per image (AugMedMNIST-C)",
        "one MONAI artifact of `bench robustness`'s 3D list (or none) at severity 1-5 per volume",
        _corrupt_2d,
        _corrupt_3d,
        per_task=True,
    ),
)

PARAMS = {
    "augment": Choice("none", "augmentation preset (see `bench augmentations`)", choices=tuple(PRESETS.names()), search=True),
    "mixup": Float(0.0, "mixup alpha (mixing weight ~ Beta(a, a)); 0 = off; soft targets, pointwise losses only", search=(0.0, 0.4), minimum=0.0),
    "cutmix": Float(0.0, "CutMix alpha; 0 = off; soft targets, pointwise losses only", search=(0.0, 1.0), minimum=0.0),
    "label_smoothing": Float(0.0, "targets become eps/2 and 1 - eps/2; pointwise losses only", search=(0.0, 0.2), minimum=0.0, maximum=0.5),
}


def soft_target_settings(config: dict[str, Any]) -> list[str]:
    """Return the names of the settings in `config` that turn 0/1 targets into soft ones."""
    return [key for key in ("mixup", "cutmix", "label_smoothing") if config.get(key, 0.0) > 0.0]


def check_method_accepts(config: dict[str, Any], method: Any) -> None:
    """Raise BenchError if `config` makes soft targets but `method`'s loss needs hard 0/1 labels."""
    soft = soft_target_settings(config)
    if soft and not getattr(method, "soft_targets", False):
        raise BenchError(
            f"{', '.join(soft)} make soft targets, but method {method.name!r} needs 0/1 labels "
            "(they apply to pointwise losses such as ce); set them to 0 for this method"
        )


@contextlib.contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """Run a per-image loop on one CPU thread: tiny ops spend more time synchronising threads than computing."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def smooth_targets(y: torch.Tensor, eps: float) -> torch.Tensor:
    """Return binary targets smoothed towards 1/2: y (1 - eps) + eps / 2 (timm's off/on values for two classes)."""
    # one line of arithmetic: timm's and torch's label smoothing take class indices, not 0/1 multi-label targets
    return y * (1.0 - eps) + 0.5 * eps


class Augmenter:
    """Callable Batch -> Batch applying a preset per image, then mixup/CutMix and label smoothing.

    Every call k draws from its own seed, derived from (seed, k) alone, so a run's augmentation
    stream is reproducible and independent of anything else that uses random numbers.
    """

    def __init__(
        self, preset: str, dims: int, seed: int, *, task: str | None = None, mixup: float = 0.0, cutmix: float = 0.0, label_smoothing: float = 0.0
    ) -> None:
        self.preset = PRESETS.get(preset)
        self.dims = dims
        self.seed = seed
        self.transform = self.preset.build(dims, task)
        self.label_smoothing = label_smoothing
        self.mixer = None
        if mixup > 0.0 or cutmix > 0.0:
            from timm.data import Mixup

            # batch mode: one weight per batch, each image mixed with its mirror in the batch;
            # with both on, timm picks one of the two per batch (switch_prob 0.5)
            self.mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch", label_smoothing=0.0)
        self.calls = 0

    @property
    def active(self) -> bool:
        """Return whether this augmenter changes anything."""
        return self.transform is not None or self.mixer is not None or self.label_smoothing > 0.0

    def _call_seed(self) -> int:
        self.calls += 1
        return int(np.random.SeedSequence([self.seed, self.calls]).generate_state(1)[0])

    def images(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Return the preset applied to every image of `x` (B, C, *spatial) in [-1, 1], each with its own draw."""
        if self.transform is None:
            return x
        from monai.utils import convert_to_tensor

        unit = (x + 1.0) / 2.0
        with torch.random.fork_rng(devices=[]), _single_thread(x.device):
            torch.manual_seed(seed)  # torchvision draws its parameters from torch's CPU generator
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=seed)  # MONAI draws from its own NumPy state
            out = torch.stack([convert_to_tensor(self.transform(image), track_meta=False) for image in unit])
        out = out.to(device=x.device, dtype=x.dtype).clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def mix(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (images, targets) after timm's mixup/CutMix: both blended with the batch's mirror by weight lam."""
        if self.mixer is None or len(x) < 2:
            return x, y
        state = np.random.get_state()
        np.random.seed(seed % 2**32)  # timm draws lam and the box from NumPy's global generator
        try:
            x = x.clone()
            # timm's own batch mixing (in place); its target mixing needs class indices, ours are 0/1 per label
            lam = float(self.mixer._mix_batch(x))
        finally:
            np.random.set_state(state)
        return x, lam * y + (1.0 - lam) * y.flip(0)

    def __call__(self, batch: Batch) -> Batch:
        seed = self._call_seed()
        x = self.images(batch.x, seed)
        x, y = self.mix(x, batch.y, seed)
        if self.label_smoothing > 0.0:
            y = smooth_targets(y, self.label_smoothing)
        return Batch(x, y, batch.index)


def build_augmenter(config: dict[str, Any], dims: int, seed: int, task: str | None = None) -> Augmenter | None:
    """Return the run's Augmenter from its config (for `task`'s images), or None when every augmentation setting is off."""
    augmenter = Augmenter(
        config.get("augment", "none"),
        dims,
        seed,
        task=task,
        mixup=config.get("mixup", 0.0),
        cutmix=config.get("cutmix", 0.0),
        label_smoothing=config.get("label_smoothing", 0.0),
    )
    return augmenter if augmenter.active else None
