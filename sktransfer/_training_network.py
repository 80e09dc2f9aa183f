"""How the trainable estimators build their network: the backbone cut at ``layer``, a new head on top."""

import torch
from torch import nn

from ._batch_statistics import warn_of_batch_statistics
from ._feature_width import feature_size, pooling_to_apply
from ._image_batches import PreprocessedImages
from ._lora import add_lora, drop_unreached_adapters
from ._progress import shows_progress
from ._runtime import seeded
from ._training_checks import warn_of_frozen_parameters
from .backbones import (
    Backbone,
    FeatureModel,
    built_by_library,
    check_layer_before_loading,
    cut_backbone,
    load_backbone,
    resolve_pooling,
)


class NetworkBuildingMixin:
    """``initialize_module``: load the backbone, cut it at ``layer``, put ``module`` (the new layers) on it.

    Also resolves ``preprocess_`` (the user's ``preprocess`` or the weights' own). Subclasses pass further
    arguments to ``module`` through ``_network_kwargs``.
    """

    def initialize_module(self):
        # One stream, seeded here (skorch's set_params also rebuilds the module outside initialize): the
        # backbone's random weights are its first draws, the new layers draw after them. Seeded apart, the
        # head drew the very numbers of the backbone's first layer.
        with seeded(self.random_state):
            self._build_module()
        return self

    def _build_module(self):
        self._weights_preprocess = None
        pooling = self.pooling
        if self.model is None:  # X holds features already (embeddings): the new layers read them as they are
            if not hasattr(self, "n_features_in_"):
                raise ValueError(
                    "model=None reads feature vectors: X must be a 2-D array, one row per sample."
                )
            backbone, n_features = Backbone(nn.Identity(), None, "features"), self.n_features_in_
        else:
            check_layer_before_loading(self.model, self.layer, self.weights)
            backbone = load_backbone(self.model, self.weights, progress=shows_progress(self.verbose))
            self._weights_preprocess = backbone.preprocess
            self._apply_preprocess()
            pooling = pooling_to_apply(self, backbone, self._first_sample)
            verify = not built_by_library(self.model)  # a user's module: is its last layer the classifier?
            n_features = feature_size(backbone, self.layer, pooling, self._first_sample, verify)
        pooling, normalize = resolve_pooling(backbone, pooling, normalize=False)
        body, channels_last_maps = cut_backbone(backbone, self.layer)
        warn_of_batch_statistics(body, "predictions")
        warn_of_frozen_parameters(body, self.strategy, type(self).__name__)
        features = FeatureModel(
            body,
            pooling=pooling,
            normalize=normalize,
            layer=self.layer,
            channels_last_maps=channels_last_maps,
        )
        if self.strategy == "lora":  # on the library's own copy of the network, its classifier cut away
            add_lora(body, rank=self.lora_rank, alpha=self.lora_alpha)
            sample = self._first_sample()
            if isinstance(sample, torch.Tensor):  # an image; text encoders call their linear layers
                drop_unreached_adapters(features, sample[None], type(self).__name__)
        # Channels-last layout only for image architectures the library builds: a user's module runs as
        # written, and text encoders read token batches.
        library_built = built_by_library(self.model) and backbone.kind == "image"
        settings = {
            "dropout": self.dropout,
            "freeze_batchnorm": self._freezes_batchnorm(),
            "channels_last": library_built,
            **self._network_kwargs(),
        }
        module = self.module(
            backbone=features,
            n_features=n_features,
            n_classes=len(self.classes_),
            **{**settings, **self.get_params_for("module")},
        )
        module.set_trainable(self._trainable_stages(0, module), bitfit=self.strategy == "bitfit")
        self._apply_preprocess()
        self.module_ = module.to(memory_format=torch.channels_last) if library_built else module
        self._architecture = self._architecture_settings()

    def _first_sample(self):
        """The first training image, preprocessed, while ``fit`` initialises; None outside fit."""
        source = getattr(self, "_initializing_on", None)
        return (
            None if source is None or not len(source) else PreprocessedImages.for_estimator(source, self)[0]
        )

    def _apply_preprocess(self):
        """``preprocess_``: the user's ``preprocess``, or the one the weights come with."""
        self.preprocess_ = self.preprocess if self.preprocess is not None else self._weights_preprocess
        self._batch_preprocess = self.preprocess is None
        self._preprocess_applied = self.preprocess  # what predict runs until the next training call

    def _network_kwargs(self):
        """Further arguments of ``module`` that a subclass's parameters decide."""
        return {}

    def _freezes_batchnorm(self):
        return self.weights is not None if self.freeze_batchnorm == "auto" else bool(self.freeze_batchnorm)
