"""Corruptions: shape, dtype, range, seeds and severity order; each checked against Pillow, torchvision or a plain formula."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from torchvision.transforms import functional as TF

from benchmark import corruptions2d as C2
from benchmark import corruptions3d as C3
from benchmark.synthetic import synthetic_arrays
from benchmark.tasks import get_task

LISTS_2D = {task: C2.corruptions_for(task) for task in C2.PARAMETERS}
CASES_2D = [(task, name) for task, corruptions in LISTS_2D.items() for name in corruptions]
CASES_3D = list(C3.corruptions())
RANDOM = {"gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise", "motion_blur", "kspace_spike", "bias_field", "rician_noise"}


def _images(task: str, n: int = 12) -> torch.Tensor:
    arrays = synthetic_arrays(get_task(task), {"train": 2, "val": 2, "test": n}, seed=3)
    return torch.from_numpy(arrays["test_images"])


def _smooth_images(dims: int, n: int, seed: int = 3) -> torch.Tensor:
    """Images with structure at several scales, as real scans have (the synthetic files are mostly pixel noise)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = (28,) * dims
    out = [sum(gaussian_filter(rng.normal(size=shape), sigma) * sigma for sigma in (1.0, 2.0, 4.0)) for _ in range(n)]
    return torch.from_numpy(np.stack([np.clip(128 + 60 * o / o.std(), 0, 255) for o in out]).astype(np.uint8))


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _corruption(task: str, name: str) -> C2.Corruption:
    return LISTS_2D[task][name] if get_task(task).dims == 2 else C3.corruptions()[name]


@pytest.mark.parametrize(("task", "name"), CASES_2D + [("adrenalmnist3d", n) for n in CASES_3D])
def test_corruption_keeps_shape_dtype_range_and_is_seeded(task: str, name: str) -> None:
    images = _images(task, 12 if get_task(task).dims == 2 else 4)
    before = images.clone()
    corruption = _corruption(task, name)
    for severity in range(1, 6):
        out = corruption(images, severity, _g(1))
        assert torch.equal(images, before), "the input must not be modified"
        assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
        assert 0 <= int(out.min()) and int(out.max()) <= 255
        assert torch.equal(out, corruption(images, severity, _g(1))), "same seed, same images"
        assert not torch.equal(out, images), f"severity {severity} changes nothing"
        if name in RANDOM:
            assert not torch.equal(out, corruption(images, severity, _g(2))), "another seed, another draw"
    with pytest.raises(ValueError, match="severity"):
        corruption(images, 6, _g(0))


@pytest.mark.parametrize(("task", "name"), CASES_2D + [("adrenalmnist3d", n) for n in CASES_3D])
def test_higher_severity_moves_images_further_from_the_clean_ones(task: str, name: str) -> None:
    images = _smooth_images(get_task(task).dims, 24 if get_task(task).dims == 2 else 4)
    corruption = _corruption(task, name)
    # the same seed at every severity: the same noise, angle, spike or field, only stronger
    distance = [float((corruption(images, s, _g(5)).double() - images.double()).abs().mean()) for s in range(1, 6)]
    ordered = [a < b for a, b in zip(distance, distance[1:])]
    if (task, name) == ("pneumoniamnist", "pixelate"):
        # MedMNIST-C's factors 0.6 and 0.5: 16 px boxes stretched back with ratio 1.75 (aliased) move an
        # image further than exact 2 x 2 blocks; the one pair out of order, here and on the real images
        assert ordered == [True, True, False, True], distance
        return
    assert all(ordered), f"{name}: mean |corrupted - clean| per severity {distance}"


@pytest.mark.realdata
def test_severity_order_on_the_real_images(real_root: Path) -> None:
    """On real images every corruption grows with severity but one: PneumoniaMNIST's pixelate at 0.6 vs 0.5."""
    out_of_order = []
    for task in ("breastmnist", "pneumoniamnist"):
        images = torch.from_numpy(np.load(real_root / f"{task}.npz")["test_images"][:200])
        for name, corruption in LISTS_2D[task].items():
            d = [float((corruption(images, s, _g(5)).double() - images.double()).abs().mean()) for s in range(1, 6)]
            out_of_order += [(task, name, s + 1) for s in range(4) if not d[s] < d[s + 1]]
    # 16 px boxes stretched to 28 (ratio 1.75, aliased) lie further from the image than exact 2 x 2 blocks
    assert out_of_order == [("pneumoniamnist", "pixelate", 3)]


# --- against the libraries MedMNIST-C calls, and plain formulas ------------------------------------


def _random_images(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, size=(n, 7, 7)).repeat(4, axis=1).repeat(4, axis=2)  # real-looking structure
    return np.clip(smooth + rng.integers(-20, 21, size=(n, 28, 28)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("factor", sorted({f for t in C2.PARAMETERS.values() for f in t["pixelate"]}))
def test_pixelate_is_pillows_box_resize_down_and_up(factor: float) -> None:
    images = _random_images()
    side = int(28 * factor)
    expected = np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.BOX).resize((28, 28), Image.BOX)) for im in images])
    assert np.array_equal(C2.pixelate(torch.from_numpy(images), factor, _g()).numpy(), expected)


def test_jpeg_brightness_contrast_gamma_equal_pillow_on_the_rgb_copy() -> None:
    images = _random_images(20)
    rgb = [Image.fromarray(im).convert("RGB") for im in images]  # what MedMNIST-C corrupts

    def gray(results: list) -> np.ndarray:
        return np.stack([np.asarray(Image.fromarray(np.asarray(r)).convert("L")) for r in results])

    for quality in (50, 7):
        saved = []
        for im in rgb:
            buffer = io.BytesIO()
            im.save(buffer, "JPEG", quality=quality)
            saved.append(Image.open(buffer))
        assert np.array_equal(C2.jpeg_compression(torch.from_numpy(images), quality, _g()).numpy(), gray(saved))
    for factor in (0.3, 0.9, 1.4, 2.0):
        assert np.array_equal(C2.brightness(torch.from_numpy(images), factor, _g()).numpy(), gray([ImageEnhance.Brightness(im).enhance(factor) for im in rgb]))
        assert np.array_equal(C2.contrast(torch.from_numpy(images), factor, _g()).numpy(), gray([ImageEnhance.Contrast(im).enhance(factor) for im in rgb]))
    for gamma in (0.4, 0.9, 1.6):
        assert np.array_equal(C2.gamma_correction(torch.from_numpy(images), gamma, _g()).numpy(), gray([TF.adjust_gamma(im, gamma, gain=1) for im in rgb]))


def test_gaussian_blur_matches_torchvision_on_pil_images_to_one_gray_level() -> None:
    images = _random_images(20)
    for kernel in (3, 7, 11):
        expected = np.stack([np.asarray(TF.gaussian_blur(Image.fromarray(im), kernel_size=kernel)) for im in images]).astype(int)
        got = C2.gaussian_blur(torch.from_numpy(images), kernel, _g()).numpy().astype(int)
        # the PIL route and the tensor route round a few half-way sums differently
        assert np.abs(got - expected).max() <= 1 and np.mean(got != expected) < 0.002


def test_luma_is_pillows_l_conversion() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 5, 64), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb.transpose(1, 2, 0)).convert("L"))
    assert np.array_equal(C2.luma(torch.from_numpy(rgb)[None]).numpy()[0], expected)


def _plain_rgb_pipeline(images: np.ndarray, noisy) -> np.ndarray:
    """MedMNIST-C's noise pipeline written out: RGB copy / 255, noise, clip, * 255, astype(uint8), Pillow's L."""
    x = np.repeat(images[:, None].astype(np.float64) / 255.0, 3, axis=1)
    out = (np.clip(noisy(x), 0, 1) * 255).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(o.transpose(1, 2, 0)).convert("L")) for o in out])


def test_noises_follow_medmnistc_formulas_with_the_same_draws() -> None:
    images = _random_images(6)
    shape = (6, 3, 28, 28)
    z = torch.randn(shape, generator=_g(4), dtype=torch.float64).numpy()
    assert np.array_equal(C2.gaussian_noise(torch.from_numpy(images), 0.1, _g(4)).numpy(), _plain_rgb_pipeline(images, lambda x: x + 0.1 * z))
    assert np.array_equal(C2.speckle_noise(torch.from_numpy(images), 0.3, _g(4)).numpy(), _plain_rgb_pipeline(images, lambda x: x + x * 0.3 * z))
    g = _g(6)
    flip, salt = torch.rand(shape, generator=g, dtype=torch.float64).numpy() < 0.05, torch.rand(shape, generator=g, dtype=torch.float64).numpy() < 0.5
    assert np.array_equal(C2.impulse_noise(torch.from_numpy(images), 0.05, _g(6)).numpy(), _plain_rgb_pipeline(images, lambda x: np.where(flip, salt.astype(float), x)))
    counts_of = lambda x: torch.poisson(torch.from_numpy(x * 25.0), generator=_g(7)).numpy()  # noqa: E731
    assert np.array_equal(C2.shot_noise(torch.from_numpy(images), 25, _g(7)).numpy(), _plain_rgb_pipeline(images, lambda x: counts_of(x) / 25.0))
    # the strength a model sees: three channels' noise averaged by the L conversion, std about 0.67x
    flat = np.full((200, 28, 28), 128, dtype=np.uint8)
    seen = C2.gaussian_noise(torch.from_numpy(flat), 0.04, _g(0)).double() - 128
    assert float(seen.std()) / (0.04 * 255) == pytest.approx(math.sqrt(0.299**2 + 0.587**2 + 0.114**2), abs=0.02)


def test_motion_blur_is_imagemagicks_one_sided_kernel() -> None:
    weights = C2.motion_kernel(5, 5)
    assert len(weights) == 11 and weights.sum() == pytest.approx(1.0) and np.all(np.diff(weights) < 0)
    # a single bright pixel, angle 0: ImageMagick's output at (x, y) reads (x + i, y), so the light spreads to the left
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 10, 20] = 200
    out = C2.motion_blur_at(torch.from_numpy(image), 5, 5, torch.tensor([0.0])).numpy()[0]
    expected = np.zeros((28, 28))
    for i, w in enumerate(weights):
        expected[10, 20 - i] = math.floor(math.floor(257 * 200 * w + 0.5) / 257)
    assert np.array_equal(out, expected)
    # any angle: the kernel taps, clamped at the border, summed plainly
    images = _random_images(3)
    angles = [-45.0, 12.5, 33.0]
    weights = C2.motion_kernel(9, 7)
    got = C2.motion_blur_at(torch.from_numpy(images), 9, 7, torch.tensor(angles)).numpy()
    for n, angle in enumerate(angles):
        a = math.radians(angle)
        ref = np.zeros((28, 28))
        for y in range(28):
            for x in range(28):
                total = 0.0
                for i, w in enumerate(weights):
                    xx = min(max(x + math.ceil(i * math.cos(a) - 0.5), 0), 27)
                    yy = min(max(y + math.ceil(i * math.sin(a) - 0.5), 0), 27)
                    total += w * float(images[n, yy, xx])
                ref[y, x] = math.floor(math.floor(257 * total + 0.5) / 257)
        assert np.array_equal(got[n], ref)


def test_lists_are_medmnistcs() -> None:
    assert list(LISTS_2D["breastmnist"]) == ["pixelate", "jpeg_compression", "speckle_noise", "motion_blur", "brightness_up", "brightness_down", "contrast_down"]
    assert len(LISTS_2D["pneumoniamnist"]) == len(LISTS_2D["chestmnist"]) == 13
    assert all(len(c.params) == 5 for t in LISTS_2D.values() for c in t.values())
    assert all(set(t) == set(C2.ALEXNET_BASELINES[name]["corrupted"]) for name, t in LISTS_2D.items())
    assert list(C2.corruptions_for("octmnist")) == list(LISTS_2D["chestmnist"])  # a 2D set MedMNIST-C's lists here lack


def test_same_images_on_every_device() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the corrupted copies are only compared across devices where one exists")
    images = _images("breastmnist")
    for corruption in LISTS_2D["pneumoniamnist"].values():
        assert torch.equal(corruption(images, 3, _g(0)), corruption(images.cuda(), 3, _g(0)).cpu())


def test_matches_medmnistc_itself_where_it_is_installed() -> None:
    """Run where medmnistc, Wand and ImageMagick are installed (a throwaway venv): the deterministic corruptions are theirs exactly."""
    registry = pytest.importorskip("medmnistc.corruptions.registry")
    images = _random_images(20)
    for task in ("breastmnist", "pneumoniamnist"):
        for name, theirs in registry.CORRUPTIONS_DS[task].items():
            if name in RANDOM:
                continue
            for s in range(5):
                expected = np.stack([np.asarray(Image.fromarray(theirs.apply(Image.fromarray(im).convert("RGB"), s)).convert("L")) for im in images]).astype(int)
                got = LISTS_2D[task][name](torch.from_numpy(images), s + 1, _g()).numpy().astype(int)
                assert np.abs(got - expected).max() <= (1 if name == "gaussian_blur" else 0), (task, name, s + 1)
