"""What the trainable estimators' shared parameters accept, checked at each fit (scikit-learn's convention)."""

import os
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from torch import nn

from ._precision import PRECISION_OPTIONS

STRATEGIES = ("linear_probe", "full", "gradual", "lp_ft", "bitfit", "lora")
LR_SCHEDULES = ("cosine", "onecycle", "constant")

PARAMETER_CONSTRAINTS = {
    "model": [str, os.PathLike, nn.Module, callable, None],
    "weights": [str, os.PathLike, None],
    "strategy": [StrOptions(set(STRATEGIES))],
    "layer": [str, None],
    "pooling": [StrOptions({"avg", "max", "cls", "model"}), None],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "freeze_batchnorm": [StrOptions({"auto"}), "boolean"],
    "recalibrate_batchnorm": ["boolean"],
    "backbone_lr_ratio": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
    "layer_decay": [Interval(Real, 0, 1, closed="right")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "label_smoothing": [Interval(Real, 0, 1, closed="left")],
    "lr_schedule": [StrOptions(set(LR_SCHEDULES)), None],
    "warmup": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="left")],
    "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
    "lora_rank": [Interval(Integral, 1, None, closed="left")],
    "lora_alpha": [Interval(Real, 0, None, closed="neither")],
    "unfreeze_epochs": [Interval(Integral, 1, None, closed="left")],
    "augment": [StrOptions({"default"}), callable, None],
    "precompute_features": ["boolean"],
    "early_stopping": ["boolean"],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "checkpoint_dir": [str, os.PathLike, None],
    "preprocess": [callable, None],
    "num_workers": [Interval(Integral, 0, None, closed="left")],
    "precision": [StrOptions(set(PRECISION_OPTIONS))],
    # one device (None: where the module is); several GPUs train through accelerator= (Accelerate)
    "device": [str, torch.device, None],
    "accelerator": [HasMethods(["prepare_model", "backward", "accumulate"]), None],
    "random_state": ["random_state"],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
}
