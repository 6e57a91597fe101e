"""How close to the machine's limit training runs: the model's FLOPs per image and the device's matmul peak.

`bench throughput` multiplies the model's training FLOPs per image (forward + backward, counted
by `torch.utils.flop_counter.FlopCounterMode`, PyTorch's own counter) by the measured images per
second, and divides by the FLOP/s of a large matrix multiply timed in the same precision on the
same device in the same process: the fraction of the peak that this device reaches on the
operation deep learning is made of. The counter counts matmuls and convolutions (2 FLOPs per
multiply-add); elementwise work (BatchNorm, ReLU, the optimizer) is left out, as is usual.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .trainer import autocast, resolve_precision


def training_flops_per_image(model: torch.nn.Module, example: torch.Tensor, precision: str) -> float:
    """Return the FLOPs of one forward and backward pass per input row of `example` (the model's weights are left as they are)."""
    was_training = model.training
    model.train()
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running statistics
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(example.device, precision):
            out = model(example).float()
        out.sum().backward()
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        p.grad = grads[name]
    model.train(was_training)
    return counter.get_total_flops() / len(example)


def matmul_peak_flops(device: torch.device, precision: str, size: int | None = None, repeats: int = 5) -> float:
    """Return the FLOP/s of an n x n matrix multiply in `precision` on `device` (the best of `repeats` timed runs after one warm-up)."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 2048)
    dtype = torch.bfloat16 if resolve_precision(precision, device)[0] == "bf16" else torch.float32
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    best = float("inf")
    for r in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:  # the first is a warm-up
            best = min(best, time.perf_counter() - started)
    return 2.0 * n**3 / best
