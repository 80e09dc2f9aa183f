"""The training core the trainable estimators share: a skorch classifier that trains a backbone and a head.

:class:`TransferClassifier` resolves the backbone (any form :func:`~sktransfer.backbones.load_backbone`
accepts) into a :class:`~sktransfer._network.BackboneWithHead`, encodes labels of any type, freezes and
unfreezes backbone stages on a schedule, gives each stage its own learning rate, warms the learning rate up,
stops on a diverging loss, and applies settings changed after fitting on the next ``fit``/``partial_fit``.
One concern per mixin around it: how it builds the network (``_training_network``), the optimizer's rate
per stage (``_training_optimizer``), where it runs (``_training_device``), mixed precision
(``_mixed_precision``), Accelerate (``_accelerate``), what carries over between calls
(``_training_state``), how X becomes batches (``_training_data``), its callbacks
(``_training_callbacks``) and its repr (``_training_repr``); what its parameters accept is in
``_training_parameters``, and the checks on what it is given and gives back in ``_training_checks``.
Estimators subclass it, choose the defaults and may add mixins of their own over the same hooks
(``_regularization``, ``_distillation``).
"""

import numpy as np
import torch
from sklearn.utils._param_validation import validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data

from ._accelerate import AcceleratedTrainingMixin, check_accelerator
from ._fitted_state import forget_fitted_attributes
from ._labels import checked_labels, encode_labels, require_labels
from ._mixed_precision import MixedPrecisionMixin
from ._pickling import NamedPicklingErrorsMixin
from ._runtime import seeded
from ._training_callbacks import CallbacksMixin, refuse_two_schedules, trainable_stage_count
from ._training_checks import (
    checked_probabilities,
    is_cross_entropy,
    refuse_log_probability_loss,
    refuse_sample_weight,
    same_classes,
    softmax_over_classes,
    sorted_classes,
)
from ._training_data import (
    TrainingDataMixin,
    label_codes,
    refuse_augment_without_images,
    refuse_dataset_settings,
    refuse_torch_dataset,
)
from ._training_device import DeviceMixin
from ._training_network import NetworkBuildingMixin
from ._training_optimizer import StageRatesMixin
from ._training_parameters import PARAMETER_CONSTRAINTS, STRATEGIES  # noqa: F401 (STRATEGIES read from here)
from ._training_repr import SklearnRepr
from ._training_state import TrainingStateMixin
from ._unused_settings import warn_of_unused_settings
from .images import validated_source
from .texts import in_length_order


class TrainingDivergedError(FloatingPointError):
    """The training loss stopped being a finite number."""


class TransferClassifier(
    NamedPicklingErrorsMixin,
    AcceleratedTrainingMixin,
    MixedPrecisionMixin,
    DeviceMixin,
    TrainingStateMixin,
    TrainingDataMixin,
    CallbacksMixin,
    NetworkBuildingMixin,
    StageRatesMixin,
    SklearnRepr,
    NeuralNetClassifier,
):
    """A skorch classifier that trains a :class:`~sktransfer._network.BackboneWithHead` built from ``model``.

    Not used directly: estimators subclass it, declare their parameters in ``__init__`` and document them.
    Everything of skorch keeps working: dunder parameters (``optimizer__momentum``), ``callbacks``,
    ``history``, ``train_split``, ``save_params`` / ``load_params``, ``warm_start``, ``partial_fit``. A dunder
    alias of one of the library's settings (``optimizer__lr`` of ``lr``, ``optimizer__weight_decay``,
    ``criterion__label_smoothing``, ``module__dropout``, ``module__freeze_batchnorm``) overrides it, as in
    skorch, until the setting is set again: the one set last counts, in the estimator and in its clones.
    Settings changed after fitting take effect on the next ``partial_fit`` or warm ``fit``: learning rates
    and weight decay (with the per-stage ratios), dropout, BatchNorm freezing, schedules, early stopping,
    checkpoints and verbosity; those that decide the architecture raise there instead. With an int
    ``random_state``, training randomness is seeded once at initialisation and continues across calls.
    """

    _parameter_constraints = PARAMETER_CONSTRAINTS

    def _trainable_stages(self, epoch, module=None):
        """How many backbone stages of ``module`` (``module_``) train during ``epoch`` (from 0)."""
        n_stages = len((self.module_ if module is None else module).stage_names)
        return trainable_stage_count(self.strategy, epoch, n_stages, self.freeze_epochs, self.unfreeze_epochs)

    def _backbone_stays_frozen(self):
        last_epoch = len(self.history) + self.max_epochs - 1  # partial_fit continues the epoch count
        return self._trainable_stages(last_epoch) == 0 and self.strategy not in ("bitfit", "lora")

    # -- initialisation -------------------------------------------------------------------------------

    def initialize(self):
        with seeded(self.random_state):
            super().initialize()
        self._training_rng = None  # seeded from random_state by the first training call
        return self

    def initialize_criterion(self):
        kwargs = self.get_params_for("criterion")
        if is_cross_entropy(self.criterion):
            kwargs.setdefault("label_smoothing", self.label_smoothing)
        self.criterion_ = self.initialized_instance(self.criterion, kwargs)
        self._criterion_made_for = self._criterion_settings()
        return self

    # -- labels ---------------------------------------------------------------------------------------

    def _encode_labels(self, y, n_samples, *, reset, classes=None):
        """Check y and turn it into class indices; with ``reset``, fix the classes (``classes`` or y's) first."""
        require_labels(y, type(self).__name__)
        y = checked_labels(y, n_samples)
        if not reset and classes is not None and not same_classes(classes, self.classes_):
            raise ValueError(
                f"classes={np.asarray(classes).tolist()[:10]} is not the classes_ of the fitted network "
                f"{np.asarray(self.classes_).tolist()[:10]}: a later partial_fit continues with those; refit "
                "(fit, warm_start=False) for other classes."
            )
        if (
            reset
            and classes is not None
            and self.classes is not None
            and not same_classes(classes, self.classes)
        ):
            raise ValueError(
                f"partial_fit's classes={np.asarray(classes).tolist()[:10]} differ from the estimator's "
                f"classes={np.asarray(self.classes).tolist()[:10]}: give one of them, or the same classes."
            )
        if reset and self.classes is not None:  # the classes of the network about to be built, sorted
            self.classes_inferred_ = sorted_classes(self.classes)
        elif reset:
            self.classes_inferred_ = np.unique(y) if classes is None else sorted_classes(classes)
        return encode_labels(y, self.classes_)

    @property
    def classes_(self):
        """The fitted network's classes, in the order of its outputs (of ``predict_proba``'s columns).

        Fixed when the network is built: ``classes`` set after fitting decides the next fit's network, not
        the labels of this one's outputs (skorch's ``classes_`` reads the parameter as it is now).
        """
        try:
            return self.classes_inferred_
        except AttributeError:  # not fitted, or pickled before the classes were fixed at fit
            return NeuralNetClassifier.classes_.fget(self)

    def _targets(self, y, n_samples, reset=True, classes=None):
        """What the network trains on for ``y``: class indices (subclasses may add -1 for unlabelled rows)."""
        return self._encode_labels(y, n_samples, reset=reset, classes=classes)

    # -- training -------------------------------------------------------------------------------------

    def fit(self, X, y, **fit_params):
        """Load the backbone, build the head for the classes in ``y`` and train.

        Parameters
        ----------
        X : images
            Any form described in :mod:`sktransfer.images`.
        y : array-like of shape (n_samples,)
            Labels of any type (strings too).
        **fit_params : dict
            Passed to the module's ``forward`` and to ``train_split``, as in skorch.

        Returns
        -------
        self
        """
        return self._fit(X, y, fit_params)

    def _fit(self, X, y, fit_params, **target_kwargs):
        if self.warm_start and self.initialized_:  # the network kept: X is checked against it
            return self._continue_training(X, y, fit_params, "fit", **target_kwargs)
        try:
            source = self._checked_training_input(X, fit_params, reset=True)
            codes = self._targets(y, len(source), reset=True, **target_kwargs)
            self._initializing_on = source  # the width of a module that ends with Flatten depends on it
            # A cold fit starts over, as every sklearn fit does: not initialised, skorch does not print its
            # "Re-initializing module." lines, which at verbose=1 read as if something were amiss.
            self.initialized_ = False
            try:
                self.initialize()
            finally:
                del self._initializing_on
            return self._train(source, self._training_targets(X, codes), "fit", fit_params)
        except BaseException:
            # Not the earlier network beside the new classes_, nor a new untrained one: not fitted at all,
            # with the attributes skorch's __init__ sets as it leaves them.
            virtual_params = self.virtual_params_
            forget_fitted_attributes(self)
            self.history_, self.initialized_, self.virtual_params_ = None, False, virtual_params
            raise

    def partial_fit(self, X, y, classes=None, **fit_params):
        """Train for ``max_epochs`` more epochs without re-initialising (the first call initialises).

        Parameters
        ----------
        X : images
        y : array-like of shape (n_samples,)
        classes : array-like or None
            All the labels, on the first call when ``y`` does not hold every class.
        **fit_params : dict

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, fit_params, classes=classes)

    def _partial_fit(self, X, y, fit_params, **target_kwargs):
        fit_params.pop("_routing_method", None)
        if not self.initialized_:
            return self._fit(X, y, fit_params, **target_kwargs)
        return self._continue_training(X, y, fit_params, "partial_fit", **target_kwargs)

    def _continue_training(self, X, y, fit_params, routing_method, **target_kwargs):
        """Train the network as it is, on X and y checked against what it was fitted on."""
        source = self._checked_training_input(X, fit_params, reset=False)
        codes = self._targets(y, len(source), reset=False, **target_kwargs)
        return self._train(source, self._training_targets(X, codes), routing_method, fit_params)

    def _checked_training_input(self, X, fit_params, *, reset):
        """The settings, ``fit_params`` and X checked before a training call loads or trains anything."""
        refuse_sample_weight(fit_params, type(self).__name__)
        self._check_settings(X)
        source = validated_source(self, X, reset=reset)
        refuse_augment_without_images(self.augment, source)
        return source

    def _check_settings(self, X):
        params = self._settings(self._parameter_constraints)
        validate_parameter_constraints(self._parameter_constraints, params, caller_name=type(self).__name__)
        refuse_torch_dataset(X, type(self).__name__)
        refuse_dataset_settings(self)
        refuse_two_schedules(self)
        if self.accelerator is not None:
            check_accelerator(self.accelerator, self._precision(), self.__dict__["device"])
        self._precision(warn=True)
        if self.strategy != "lora":
            warn_of_unused_settings(self, ["lora_rank", "lora_alpha"], "with strategy='lora'")
        if self.strategy not in ("gradual", "lp_ft"):
            warn_of_unused_settings(self, ["freeze_epochs"], "with strategy='gradual' or 'lp_ft'")
        if self.strategy != "gradual":
            warn_of_unused_settings(self, ["unfreeze_epochs"], "with strategy='gradual'")
        if self.lr_schedule is None:
            warn_of_unused_settings(self, ["warmup"], "with an lr_schedule")
        if "param_groups" in self.get_params_for("optimizer"):
            warn_of_unused_settings(
                self,
                ["weight_decay", "backbone_lr_ratio", "layer_decay"],
                "in the library's parameter groups, which optimizer__param_groups replaces (give your groups "
                "their own weight_decay and lr)",
            )
        if not is_cross_entropy(self.criterion):
            warn_of_unused_settings(self, ["label_smoothing"], "with criterion=torch.nn.CrossEntropyLoss")
        refuse_log_probability_loss(self.criterion, self.module)
        if not self.early_stopping:
            warn_of_unused_settings(self, ["patience", "validation_fraction"], "with early_stopping=True")
        elif self.train_split is not None:
            warn_of_unused_settings(
                self, ["validation_fraction"], "without a train_split of your own (train_split=None)"
            )

    def _train(self, source, targets, routing_method, fit_params):
        with self._on_device(), self._random_stream(), self._training_texts_checked():
            self._move_to_device()
            self._apply_changed_settings()
            codes = label_codes(targets)
            if self._holds_out_for_early_stopping():  # before the backbone embeds anything
                self._check_validation_split(np.asarray(codes))
            data = self._training_data(source, targets)
            with self._accelerated_run():  # skorch stratifies validation splits by the codes
                super().partial_fit(data, codes, _routing_method=routing_method, **fit_params)
        return self

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **self._training_inputs(yi), **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        if not self._loss_is_finite(loss):
            precision = (
                "" if self._precision() == "float32" else f"precision='float32' (now {self.precision!r}), "
            )
            value = "non-finite in another process" if torch.isfinite(loss) else loss.item()
            raise TrainingDivergedError(
                f"the training loss became {value} in epoch {len(self.history)}: training diverged. "
                f"Try a smaller lr (now {self.lr}), {precision}gradient clipping "
                "(callbacks=[skorch.callbacks.GradientNormClipping(1.0)]), and check that no image in X is corrupt."
            )
        self._backward(loss)
        return {"loss": loss, "y_pred": y_pred}

    def _training_inputs(self, y):
        """Further keyword arguments of the module's ``forward`` in a training step, from its targets."""
        return {}

    # -- prediction -----------------------------------------------------------------------------------

    def forward_iter(self, X, training=False, device="cpu"):
        self._precision(warn=True)  # float16 set after fitting, on a CPU: raise before the first batch
        yield from super().forward_iter(X, training=training, device=device)

    def _get_predict_nonlinearity(self):
        # The network ends in one logit per class whatever the loss; skorch's "auto" reads the criterion, and
        # leaves the outputs of any loss but cross-entropy as they are: logits, which are no probabilities.
        if self.predict_nonlinearity == "auto":
            return softmax_over_classes
        return super()._get_predict_nonlinearity()

    def predict_proba(self, X):
        """Class probabilities, one row per image, columns in the order of ``classes_``.

        Parameters
        ----------
        X : images

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return checked_probabilities(self._run_fitted(X, super().predict_proba))

    def _run_fitted(self, X, run):
        """``run(dataset of X)`` on the fitted network, texts sorted by length, rows back in X's order."""
        check_is_fitted(self, "module_")
        self._warn_if_network_settings_changed()
        # texts run sorted by length, so that batches carry little padding; inside fit, whose training
        # texts were checked, no warning of truncated ones
        return in_length_order(self.get_dataset(X), run, warn=not self._texts_were_checked())

    def predict(self, X):
        """The most probable label of each image, of the type the labels had in ``fit``.

        Parameters
        ----------
        X : images

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        codes = self.predict_proba(X).argmax(axis=1)
        return self.classes_[codes]

    # -- parameters and tags --------------------------------------------------------------------------

    def __setattr__(self, name, value):
        if name in (
            "model",
            "augment",
            "preprocess",
            "preprocess_",
            "_weights_preprocess",
            "_preprocess_applied",
        ):
            # These may be modules (a user's network, torchvision v2 transforms), but they are parameters or
            # plain fitted state here, not components for skorch to register, move and train.
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def _get_param_names(self):
        """skorch's parameters without its private bookkeeping (``_params_to_validate``)."""
        return [name for name in super()._get_param_names() if not name.startswith("_")]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags
