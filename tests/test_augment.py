"""Augmentation: presets keep shape, dtype and range, draw per image, are seeded, and never touch evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import metrics
from benchmark.cli import main
from benchmark.config import resolve
from benchmark.data import Batch, DeviceSplit, ShuffleSampler
from benchmark.data.augment import PRESETS, Augmenter, build_augmenter, check_method_accepts, smooth_targets
from benchmark.errors import BenchError
from benchmark.methods import METHODS, Method, TrainInfo
from benchmark.models import build_model
from benchmark.tasks import get_task, load_arrays
from benchmark.trainer import fit, predict

SHAPES = {2: (6, 1, 28, 28), 3: (4, 1, 28, 28, 28)}


def _batch(dims: int, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(SHAPES[dims], generator=generator) * 2 - 1
    x[1] = x[0]  # two identical images: a per-image draw must treat them differently
    y = torch.tensor([[1.0], [0.0]]).repeat(len(x), 1)[: len(x)]
    return Batch(x, y, torch.arange(len(x)))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_keeps_shape_dtype_range_and_is_seeded(name: str, dims: int) -> None:
    batch = _batch(dims)
    before = batch.x.clone()
    first = Augmenter(name, dims, seed=7)(batch)
    again = Augmenter(name, dims, seed=7)(batch)
    other = Augmenter(name, dims, seed=8)(batch)
    assert torch.equal(batch.x, before), "the input batch must not be modified in place"
    assert first.x.shape == batch.x.shape and first.x.dtype == torch.float32
    assert first.x.min() >= -1.0 and first.x.max() <= 1.0
    assert torch.equal(first.x, again.x), "same seed, same batch"
    assert torch.equal(first.y, batch.y) and torch.equal(first.index, batch.index)
    if name == "none":
        assert torch.equal(first.x, batch.x) and build_augmenter({"augment": "none"}, dims, 0) is None
        return
    assert not torch.equal(first.x, batch.x)
    assert not torch.equal(first.x, other.x), "another seed, another draw"
    assert not torch.equal(first.x[0], first.x[1]), "each image gets its own draw, not one per batch"
    augmenter = Augmenter(name, dims, seed=7)
    assert not torch.equal(augmenter(batch).x, augmenter(batch).x), "successive batches get new draws"


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(BenchError, match="strong"):
        resolve(get_task("breastmnist"), METHODS.get("ce"), {"augment": "rotate"})


@pytest.mark.parametrize("dims", [2, 3])
def test_mixup_blends_images_and_targets_by_the_same_weight(dims: int) -> None:
    batch = _batch(dims, seed=1)
    out = Augmenter("none", dims, seed=3, mixup=0.4)(batch)
    # each row i is mixed with row B-1-i; rows 0 and B-1 carry labels 1 and 0 (or 0 and 1)
    lam = float(out.y[0] if batch.y[0] == 1 else 1 - out.y[0])
    assert 0.0 < lam < 1.0
    assert torch.allclose(out.x, lam * batch.x + (1 - lam) * batch.x.flip(0), atol=1e-6)
    assert torch.allclose(out.y, lam * batch.y + (1 - lam) * batch.y.flip(0))
    assert torch.equal(Augmenter("none", dims, seed=3, mixup=0.4)(batch).x, out.x)


@pytest.mark.parametrize("dims", [2, 3])
def test_cutmix_pastes_a_box_whose_area_is_the_target_weight(dims: int) -> None:
    batch = _batch(dims, seed=2)
    out = Augmenter("none", dims, seed=5, cutmix=1.0)(batch)
    lam = float(out.y[0] if batch.y[0] == 1 else 1 - out.y[0])
    pasted = out.x[0] != batch.x[0]
    assert torch.equal(out.x[0][pasted], batch.x[-1][pasted]), "pasted pixels come from the mirrored image"
    assert float(pasted.float().mean()) == pytest.approx(1 - lam, abs=1e-6)
    assert torch.allclose(out.y, lam * batch.y + (1 - lam) * batch.y.flip(0))


def test_label_smoothing_moves_targets_towards_one_half() -> None:
    batch = _batch(2)
    out = Augmenter("none", 2, seed=0, label_smoothing=0.1)(batch)
    assert torch.equal(out.x, batch.x)
    assert torch.allclose(out.y, torch.where(batch.y == 1, torch.tensor(0.95), torch.tensor(0.05)))
    assert torch.allclose(smooth_targets(torch.tensor([0.0, 1.0]), 0.2), torch.tensor([0.1, 0.9]))


@pytest.mark.parametrize("method", METHODS.names())
def test_soft_targets_only_for_methods_that_take_them(method: str) -> None:
    cls = METHODS.get(method)
    config = resolve(get_task("breastmnist"), cls, {"mixup": "0.2"})
    if cls.soft_targets:
        check_method_accepts(config, cls)
    else:
        with pytest.raises(BenchError, match="mixup"):
            check_method_accepts(config, cls)

    class Pairwise(Method):
        name = "pairwise"

    with pytest.raises(BenchError, match="label_smoothing"):
        check_method_accepts({"label_smoothing": 0.1}, Pairwise)
    check_method_accepts({"mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0}, Pairwise)


def test_evaluation_is_never_augmented(synthetic_root: Path) -> None:
    """Only training batches pass through the augmenter; val and train AUC use the plain images."""
    task = get_task("breastmnist")
    data = load_arrays(task, synthetic_root, verify_md5=False, splits=("train", "val"))
    device = torch.device("cpu")
    train = DeviceSplit(data.images("train"), data.labels("train"), device)
    val = DeviceSplit(data.images("val"), data.labels("val"), device)
    torch.manual_seed(0)
    model = build_model(task.architecture, 1, 1)
    config = resolve(task, METHODS.get("ce"), {"epochs": 1, "augment": "strong"})
    sampler = ShuffleSampler(train.labels_np, config["batch_size"], 0)
    info = TrainInfo(len(train), 1, False, np.array([0.7]), 1, sampler.steps_per_epoch(), device, train.labels_np)
    method = METHODS.get("ce")(config, model, info)
    augmenter = build_augmenter(config, 2, 0)
    seen: list[torch.Tensor] = []

    def counting(batch: Batch) -> Batch:
        seen.append(batch.index)
        return augmenter(batch)

    result = fit(model, method, train, val, sampler, 1, augment=counting)
    assert len(seen) == sampler.steps_per_epoch()
    record = result.history[0]
    model.load_state_dict(result.best_state)
    assert record["val/auc"] == pytest.approx(metrics.evaluate(val.labels_np, predict(model, val))["auc"])
    assert record["train/auc"] == pytest.approx(metrics.evaluate(train.labels_np, predict(model, train))["auc"])
    assert len(seen) == sampler.steps_per_epoch(), "predict must not augment"


def test_cli_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["augmentations"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS.names()) and "mixup" in out and "label_smoothing" in out
