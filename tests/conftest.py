"""Shared fixtures: synthetic task files in the official format, and the real-data switch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmark.synthetic import write_synthetic
from benchmark.tasks import TASKS


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n 2`, the README's test command), share the cores among the workers.

    Each worker is one process; PyTorch would otherwise start as many threads as there are
    cores in every one of them, and oversubscribed threads spin instead of working.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))  # tune.py's rule for its workers


@pytest.fixture(scope="session", autouse=True)
def cpu_without_native_bf16() -> Iterator[None]:
    """Run every test as on a CPU without native bf16, where `precision=auto` is fp32.

    The suite's numbers then do not depend on whether the machine running it has avx512_bf16;
    the tests of the precision rule set the capability they need themselves. Session-scoped,
    so fixtures of every scope (a module's shared run) see it too.
    """
    from benchmark import trainer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "native_bf16_cpu", lambda: [])
        yield


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a small synthetic `<flag>.npz` for every registered task."""
    root = tmp_path_factory.mktemp("synthetic-data")
    for flag in TASKS:
        write_synthetic(TASKS.get(flag), root)
    return root


@pytest.fixture
def real_root() -> Path:
    """The folder of the real MedMNIST files; skips the test unless BENCH_DATA_ROOT is set."""
    root = os.environ.get("BENCH_DATA_ROOT")
    if not root:
        pytest.skip("real-data test: set BENCH_DATA_ROOT to the folder of the real MedMNIST files")
    return Path(root)
