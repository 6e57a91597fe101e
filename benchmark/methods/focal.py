"""`focal`: the alpha-balanced focal loss (Lin et al., ICCV 2017), the AUC-M paper's second baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hparams import Float
from .base import check_targets, register
from .ce import CrossEntropy

if TYPE_CHECKING:
    import torch


@register("focal")
class FocalLoss(CrossEntropy):
    """Alpha-balanced focal loss per label, with CE's optimizer and schedule (Adam, lr x0.1 at 50 % and 75 %).

    Objective: min_w mean_i mean_l -alpha_t (1 - p_t)^gamma log p_t, where p_t is the sigmoid
    probability of the true class and alpha_t = alpha for positives, 1 - alpha for negatives.
    gamma = 0 and alpha = 0.5 give half the cross-entropy. The AUC-M paper (Yuan et al., ICCV
    2021) tunes alpha in {0.25, 0.5, 0.75} and gamma in {1, 2, 5}; the defaults are Lin et al.'s.
    """

    summary = "alpha-balanced focal loss (Lin et al. 2017), Adam as ce"
    PARAMS = {
        **CrossEntropy.PARAMS,
        "alpha": Float(0.25, "focal weight of the positive class (1 - alpha for negatives)", search=(0.25, 0.75), minimum=0.0, maximum=1.0),
        "gamma": Float(2.0, "focusing exponent (0 = weighted cross-entropy)", search=(1.0, 5.0), minimum=0.0),
    }

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the mean alpha-balanced focal loss of `logits` against 0/1 `targets` (torchvision's)."""
        from torchvision.ops import sigmoid_focal_loss

        check_targets(logits, targets, self.info.n_labels, "focal loss")
        return sigmoid_focal_loss(logits, targets, alpha=self.config["alpha"], gamma=self.config["gamma"], reduction="mean")
