"""Acquisition artifacts of CT and MRI volumes, from MONAI's transforms, at five severities.

MedMNIST-C covers no 3D set, so this list is the harness's own: the artifacts MONAI models for
volumes, each at five fixed strengths chosen here (no published ladder exists), in the families
MedMNIST-C's report uses where one fits:

| corruption | MONAI transform | severity 1 .. 5 |
|---|---|---|
| gibbs_ringing | GibbsNoise (k-space truncated to a sphere of radius (1 - alpha) 14 sqrt 2) | alpha 0.3 .. 0.7 |
| kspace_spike | RandKSpaceSpikeNoise (one k-space point per volume set to this log-magnitude, random place) | 6.0 .. 8.0 |
| bias_field | RandBiasField (degree 3, coefficients uniform in [-c, c]) | c 0.1 .. 0.5 |
| rician_noise | RandRicianNoise (MRI magnitude noise, std in [0, 1] units) | 0.02 .. 0.10 |
| gaussian_noise | RandGaussianNoise (CT-like additive noise) | 0.02 .. 0.10 |
| low_resolution | RandSimulateLowResolution (area average down, trilinear up) | zoom 0.8 .. 0.3 |
| gaussian_blur | GaussianSmooth | sigma 0.5 .. 1.5 voxels |
| contrast_down | ScaleIntensityFixedMean (around each volume's mean) | factor 0.9 .. 0.4 (MedMNIST-C's X-ray contrast_down) |

Every function takes a uint8 batch (N, D, H, W) on any device and a CPU `torch.Generator`, runs
the transform on the volumes scaled to [0, 1] (MONAI draws from its own NumPy state, seeded from
the generator, so a seed gives the same volumes on every device) and returns the result clipped
to [0, 1] and rounded back to uint8, the test split's own format. Nothing here is written by
hand but that wiring.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .corruptions2d import Corruption

FAMILIES = {
    "gibbs_ringing": "k-space",
    "kspace_spike": "k-space",
    "bias_field": "intensity",
    "rician_noise": "noise",
    "gaussian_noise": "noise",
    "low_resolution": "blur",
    "gaussian_blur": "blur",
    "contrast_down": "color",
}
PARAMETERS: dict[str, tuple[float, ...]] = {
    "gibbs_ringing": (0.3, 0.4, 0.5, 0.6, 0.7),
    "kspace_spike": (6.0, 6.5, 7.0, 7.5, 8.0),
    "bias_field": (0.1, 0.2, 0.3, 0.4, 0.5),
    "rician_noise": (0.02, 0.04, 0.06, 0.08, 0.10),
    "gaussian_noise": (0.02, 0.04, 0.06, 0.08, 0.10),
    "low_resolution": (0.8, 0.65, 0.5, 0.4, 0.3),
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}


def _monai() -> Any:
    import monai.transforms as mt  # imported lazily: MONAI's transforms take a second to import

    return mt


def _numpy_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _op(build: Callable[[float], Any], *, batched: bool = True) -> Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]:
    """Return an op applying MONAI transform build(param) to volumes in [0, 1], from one seeded state.

    Batched: the N volumes are the transform's N channels, one call (the transforms below that
    allow it treat each channel on its own: its own noise, spike, mean or filter pass).
    Otherwise one call per volume (1, D, H, W), in order.
    """

    def op(volumes: torch.Tensor, param: float, generator: torch.Generator) -> torch.Tensor:
        from monai.utils import convert_to_tensor

        transform = build(param)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=_numpy_seed(generator))
        unit = volumes.to(torch.float32).div(255.0)
        if batched:
            out = convert_to_tensor(transform(unit), track_meta=False)
        else:
            out = torch.stack([convert_to_tensor(transform(v[None]), track_meta=False)[0] for v in unit])
        return out.to(unit.device, torch.float32).clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)

    return op


def _gibbs(alpha: float) -> Any:
    return _monai().GibbsNoise(alpha=alpha)


def _spike(log_intensity: float) -> Any:
    return _monai().RandKSpaceSpikeNoise(prob=1.0, intensity_range=(log_intensity, log_intensity), channel_wise=True)


def _bias(coeff: float) -> Any:
    return _monai().RandBiasField(degree=3, coeff_range=(-coeff, coeff), prob=1.0)


def _rician(std: float) -> Any:
    return _monai().RandRicianNoise(prob=1.0, mean=0.0, std=std, sample_std=False)


def _gaussian_noise(std: float) -> Any:
    return _monai().RandGaussianNoise(prob=1.0, mean=0.0, std=std, sample_std=False)


def _low_resolution(zoom: float) -> Any:
    # area averaging down (a thick slice's partial-volume average), not MONAI's default nearest:
    # nearest sampling at 0.65 aliased into a larger change than at 0.5 (not ordered by severity)
    return _monai().RandSimulateLowResolution(prob=1.0, zoom_range=(zoom, zoom), downsample_mode="area")


def _blur(sigma: float) -> Any:
    return _monai().GaussianSmooth(sigma=sigma)


def _contrast(factor: float) -> Any:
    return _monai().ScaleIntensityFixedMean(factor=factor - 1.0, fixed_mean=True, channel_wise=True)


OPS = {
    "gibbs_ringing": _op(_gibbs),
    "kspace_spike": _op(_spike),
    "bias_field": _op(_bias, batched=False),  # one coefficient draw per call: a volume each
    "rician_noise": _op(_rician),
    "gaussian_noise": _op(_gaussian_noise),
    "low_resolution": _op(_low_resolution),
    "gaussian_blur": _op(_blur),
    "contrast_down": _op(_contrast),
}


def corruptions() -> dict[str, Corruption]:
    """Return the 3D corruption list, in its order."""
    return {name: Corruption(name, FAMILIES[name], OPS[name], params) for name, params in PARAMETERS.items()}
