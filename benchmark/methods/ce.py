"""`ce`: binary cross-entropy on the logits, the MedMNIST baseline."""

from __future__ import annotations

from ..data import Batch
from ..hparams import Float
from ..lazy import lazy_import
from .base import Method, StepContext, check_targets, decay_milestones, register

torch = lazy_import("torch", globals())
F = lazy_import("torch.nn.functional", globals())


@register("ce")
class CrossEntropy(Method):
    """Binary cross-entropy per label with the official protocol: Adam, lr x0.1 at 50 % and 75 %.

    Objective: min_w mean_i mean_l BCE(sigmoid(h_w(x_i)_l), y_il). Multi-label tasks use one
    output per label (MedMNIST's BCEWithLogits for ChestMNIST); binary tasks one output.
    """

    summary = "binary cross-entropy, Adam (the MedMNIST protocol)"
    soft_targets = True  # BCE is pointwise: mixup / label smoothing targets are well defined
    PARAMS = {
        "lr": Float(1e-3, "Adam learning rate", search=(1e-4, 1e-2), log=True, minimum=0.0),
        "weight_decay": Float(0.0, "Adam L2 weight decay", search=(0.0, 1e-3), minimum=0.0),
    }

    def configure(self) -> None:
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"]
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=decay_milestones(self.info.epochs), gamma=0.1
        )

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the mean binary cross-entropy of `logits` against 0/1 `targets`."""
        check_targets(logits, targets, self.info.n_labels, "cross-entropy")
        return F.binary_cross_entropy_with_logits(logits, targets)

    def train_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        logits = ctx.forward(batch.x)
        loss = self.loss(logits, batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def on_epoch_end(self, epoch: int, val_metrics: dict[str, float]) -> None:
        self.scheduler.step()
