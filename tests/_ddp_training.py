"""Run by ``torch.distributed.run`` in a test: two CPU processes fine-tune one network with DDP.

Each process writes its final weights and predictions to the folder given as the first argument; the test
checks that the processes agree (gradients of every stage were synchronised, including stages unfrozen
after training began) and that the classifier learned. A last fit then fails in rank 1, and the launch must
end instead of leaving rank 0 waiting.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from skorch.callbacks import Callback

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier
from sktransfer.domain_adaptation import NoTargetDataWarning
from sktransfer.domain_adaptation.domain_batches import DomainBalancedBatchSampler
from tests._models import TinyConvNet


class FailOnRankOne(Callback):
    def on_epoch_begin(self, net, **kwargs):
        if net.accelerator.process_index == 1 and len(net.history) == 2:
            raise RuntimeError("rank 1 fails in epoch 2")


def main(out):
    accelerator = Accelerator(cpu=True)
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 100, size=(16, 16, 16, 3))
    bright = rng.integers(150, 256, size=(16, 16, 16, 3))
    X = np.concatenate([dark, bright]).astype(np.uint8)
    y = np.array(["dark"] * 16 + ["bright"] * 16)
    common = {"model": TinyConvNet, "weights": None, "batch_size": 4, "accelerator": accelerator}
    fine_tuned = FineTuneClassifier(
        strategy="gradual", freeze_epochs=1, unfreeze_epochs=2, max_epochs=5, lr=3e-2, **common
    ).fit(X, y)
    y_domains = np.where(np.arange(32) % 4 == 0, -1, (np.arange(32) >= 16).astype(int))
    adapted = DomainAdaptedClassifier(method="dann", strategy="full", max_epochs=2, **common).fit(
        X, y_domains
    )
    # Per-epoch sums over the target predictions (PADA's class weights, the self-training collapse check's
    # counts) are taken over both processes' batches, so that both weigh the classes and judge alike.
    partial = DomainAdaptedClassifier(method="dann", partial=True, max_epochs=2, **common).fit(X, y_domains)
    self_trained = DomainAdaptedClassifier(method="self_training", max_epochs=2, **common).fit(X, y_domains)
    # Early stopping on a validation split drawn without a seed, and BatchNorm statistics left as training
    # made them: the processes must still agree on the split, on when to stop and on the statistics.
    stopped = FineTuneClassifier(
        strategy="full", max_epochs=3, early_stopping=True, recalibrate_batchnorm=False, **common
    ).fit(X, y)
    # Without target rows the discriminator's loss is left out; DDP still gets all its gradients.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoTargetDataWarning)
        DomainAdaptedClassifier(method="dann", max_epochs=1, **common).fit(X, (y == "bright").astype(int))
    rank = accelerator.process_index
    is_target = y_domains == -1
    torch.save(
        {
            "world_size": accelerator.num_processes,
            "fine_tuned": fine_tuned.module_.state_dict(),
            "adapted": adapted.module_.state_dict(),
            "stopped": stopped.module_.state_dict(),
            "validation_losses": stopped.history[:, "valid_loss"],
            "predictions": fine_tuned.predict(X),
            "labels": y,
            "stages": fine_tuned.history[:, "trainable_stages"],
            "class_weights": partial.class_weights_,
            "predicted_counts": self_trained._last_counts,
            "target_rows_per_epoch": sum(
                int(is_target[batch].sum()) for batch in DomainBalancedBatchSampler(is_target, batch_size=4)
            ),
        },
        Path(out) / f"rank{rank}.pt",
    )
    # Last, rank 1 fails in the middle of a fit: rank 0 must not wait for it forever.
    FineTuneClassifier(max_epochs=4, callbacks=[FailOnRankOne()], **common).fit(X, y)


if __name__ == "__main__":
    main(sys.argv[1])
