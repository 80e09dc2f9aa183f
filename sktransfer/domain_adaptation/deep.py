"""DomainAdaptedClassifier: a backbone, a bottleneck and a head trained to work on another domain."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from .._labels import refuse_minus_one_among_classes
from .._training_checks import checked_probabilities
from .._training_docs import document_parameters
from ..backbones import OFFLINE_MODEL_NAME
from ..training import TransferClassifier
from .domain_batches import DomainBatchesMixin
from .domains import (
    SourceDomainsMixin,
    TargetScoreMixin,
    split_domains,
    warn_of_a_single_target_row,
)
from .networks import ADVERSARIAL, DISCRIMINATOR_DIM, DomainAdaptationNetwork
from .objectives import AdaptationObjectiveMixin

METHODS = ("dann", "cdan", "mmd", "coral", "mcc", "self_training", "source_only")


@document_parameters
class DomainAdaptedClassifier(
    TargetScoreMixin, SourceDomainsMixin, DomainBatchesMixin, AdaptationObjectiveMixin, TransferClassifier
):
    """Learn from labelled source images and unlabelled target images, to predict well on the target.

    ``fit(X, y, sample_domain=None)`` takes both domains in one X: a row is target when ``y == -1`` or when
    its ``sample_domain`` is negative (positive = source), so that GridSearchCV and cross-validation split
    them together. Target labels are never used for training. :meth:`predict` treats every row as target.

    A skorch classifier like :class:`~sktransfer.FineTuneClassifier`, with its training options: the
    network is the backbone, a bottleneck and a new head, trained on batches of half source and half target
    rows with the classification loss of the labelled rows plus ``trade_off`` times an alignment loss:

    - ``"dann"``: a domain discriminator behind a gradient reversal layer whose strength warms up as
      2 / (1 + exp(-10 p)) - 1 over training progress p (Ganin & Lempitsky 2015);
    - ``"cdan"``: CDAN+E (Long et al. 2018), DANN whose discriminator reads the features conditioned on
      the predicted class probabilities (their multilinear map), rows weighted by the certainty of
      their prediction;
    - ``"mmd"``: multi-kernel maximum mean discrepancy between the domains' outputs (DAN);
    - ``"coral"``: distance between the covariances of the domains' outputs (Deep CORAL), their difference
      averaged over the recent batches (``covariance_momentum``);
    - ``"mcc"``: minimum class confusion of the target predictions (Jin et al. 2020);
    - ``"self_training"``: source-only training, then target rows the network classifies confidently
      join the training set with those labels (see ``self_training_epochs``);
    - ``"source_only"``: no alignment, the baseline.

    Every alignment warms up along the same schedule: the reversal strength of DANN and CDAN, and a factor
    2 / (1 + exp(-10 p)) - 1 on the losses of MMD, CORAL and MCC (p: the training progress), so that none
    acts at full weight on the features and predictions of an untrained network.

    **Several source domains.** Rows with different positive ``sample_domain`` values are different
    sources, each aligned with the target on its own: DANN and CDAN get one discriminator output per
    source, MMD and CORAL average their distance from each source to the target.

    Parameters
    ----------
    method : {"dann", "cdan", "mmd", "coral", "mcc", "self_training", "source_only"}, default="dann"
        The alignment loss.
    trade_off : "auto" or float, default="auto"
        Weight of the alignment loss, reached after the warm-up. ``"auto"``: 0.3 for the adversarial methods
        (``"dann"``, ``"cdan"``), 1.0 for the others. A reversed gradient at full weight pulls the features
        toward whatever fools the discriminator before the classes have formed: at 1.0 DANN fell below
        source-only on typeset → handwritten digits trained from scratch, and DANN and CDAN both did with the
        pretrained EfficientNet-Lite0 fine-tuned on that shift, while at 0.3 both gained there. On MNIST →
        MNIST-M 1.0 gained them 0.03 to 0.04 more: the price of a default that does no harm
        (``benchmarks/bench_domain_adaptation.py``: its ``trade_off=1`` rows, trade-off grid and ablation; the
        figures are in ``benchmarks/RESULTS.md``).
    alignment_layer : {"logits", "bottleneck"}, default="logits"
        What ``"mmd"`` and ``"coral"`` align: the head's output (class logits), where Deep CORAL applies
        its loss (the last classification layer, fc8, in Sun & Saenko 2016) and the top layer DAN adapts,
        or the bottleneck features. Aligning the logits gained over the bottleneck for both methods on
        most shifts of ``benchmarks/bench_domain_adaptation.py``, which keeps both as rows of its tables
        (the figures are in ``benchmarks/RESULTS.md``). The other methods ignore it, and fit warns when it
        is set for them.
    covariance_momentum : "auto" or float in [0, 1), default="auto"
        For ``"coral"``: how much the difference of the domains' covariances that the loss follows remembers
        of the earlier batches (an exponential moving average; 0: the current batch alone, as in Deep
        CORAL). With 16 rows per domain in a batch, one batch's covariances are mostly sampling noise:
        averaged at 0.9, CORAL gained over the batch alone on both from-scratch shifts of
        ``benchmarks/bench_domain_adaptation.py`` (its ``covariance_momentum=0`` rows). It also aligns
        harder: on the benchmark's target that lacks half the source classes, CORAL lost more to the absent
        classes at 0.9 than at 0 (with and without ``partial``). ``"auto"``: 0.9, except with
        ``partial=True``, which says the target lacks classes: 0. A momentum near 1 remembers features the
        network has since changed. The other methods ignore it, and fit warns when it is set for them.
    bottleneck_dim : int, default=256
        Width of the bottleneck between backbone and head.
    discriminator_dim : "auto" or int, default="auto"
        Hidden width of the two layers of the domain discriminator of DANN and CDAN. On a small network
        the discriminator can cost as much as the rest: 1024, the width used with ResNet-50, nearly
        tripled the time of a CDAN training step of a LeNet, for no better accuracy on MNIST → MNIST-M.
        ``"auto"``: 512; with ``model=None`` (no backbone: the network is the bottleneck and head on the
        features), ``bottleneck_dim``, so that the discriminator is no wider than the features it reads.
        There, at 512, CDAN's discriminator held 2.4 times the classifier's parameters and a fit on frozen
        embeddings took 2.2 times source-only's time; at the bottleneck's width, 1.75 times, for as much
        target accuracy (0.469 against 0.465; DANN 0.443 against 0.454, within the spread over seeds: the
        frozen section of ``benchmarks/RESULTS.md``). The other methods have no discriminator, and fit warns
        when it is set for them.
    self_training_epochs : int or None, default=None
        The last this many epochs of each ``fit`` (after the method's own alignment has worked on the
        features) add self-training: target rows whose predicted class has a probability of at least
        ``pseudo_label_threshold`` are trained on with that class, next to the labelled rows. A
        refinement stage after any method; ``None``: 0, or the second half of the epochs for
        ``method="self_training"``. At or above ``max_epochs``, a fit of a new network self-trains from its
        first epoch, on an untrained head's guesses, and warns (``UntrainedPseudoLabelsWarning``). Each epoch's pseudo-labels come from a copy of the network's weights
        made at the start of the epoch (a copy of the trainable weights in memory, and a forward pass of
        the target rows through it), not from the network each step leaves: labels from the network being
        trained made its own confident guesses more confident step after step, and on the benchmark's
        frozen embeddings, where the network got 30% of the target right, emptied 3 to 5 of the 10 classes
        in every fit. When self-training still all but empties a class from the target predictions, which
        the epoch before it had (confirmation bias), ``fit`` warns with a
        :class:`~sktransfer.domain_adaptation.PseudoLabelCollapseWarning`. Not judged with
        ``partial=True``, where absent classes are meant to leave the predictions.
    pseudo_label_threshold : float, default=0.9
        The probability a target row's predicted class needs for the row to be self-trained on. Without
        self-training epochs this and ``pseudo_label_balance`` are not read, and fit warns when they are
        set.
    pseudo_label_balance : bool, default=True
        Give every class among the selected target rows the same total weight, so that the classes the
        network already predicts most often do not take over the pseudo-labels.
    partial : bool, default=False
        Partial domain adaptation (PADA, Cao et al. 2018), for a target that lacks some source classes:
        each epoch, each class's share of the target rows' predicted probabilities, over its share of the
        source rows and capped at 1 (over the batches of every process under an ``accelerator``), weighs
        the source classes, in the classification loss and in the alignment (the discriminator's loss, or
        the source rows' kernel mean or covariance for ``"mmd"`` and ``"coral"``), so that source classes
        the target predictions say are absent stop being aligned with it. PADA divides the target shares by
        their maximum instead, which also down-weights the classes the target holds whenever its predictions
        favour one class (``sktransfer.domain_adaptation.losses.partial_class_weights`` says more). With
        ``method="source_only"`` there is no alignment to weigh: fit warns (the ``partial`` section of
        ``benchmarks/RESULTS.md`` measures it). Only for a target that lacks classes: with
        ``domain_batchnorm="auto"`` it also normalises the domains together, which on the benchmark's
        whole target cost DANN 0.15 of target accuracy.
    strategy : {"full", "gradual", "lp_ft", "linear_probe", "bitfit", "lora"}, default="full"
        What trains in the backbone; the bottleneck, head and discriminator always train. ``"full"``: the
        whole backbone from the first epoch. ``"linear_probe"``: none of it. ``"lp_ft"``: none of it for
        ``freeze_epochs`` epochs, then all of it. ``"gradual"``: none of it for ``freeze_epochs`` epochs,
        then its stages from the top down, over ``unfreeze_epochs`` epochs. ``"bitfit"``: its biases and
        norm layers only. ``"lora"``: low-rank adapters on its attention and feed-forward linear layers. Frozen stages stay in evaluation mode, so their BatchNorm statistics do not change.
    recalibrate_batchnorm : bool, default=True
        After training, re-estimate the running statistics of the BatchNorm layers whose statistics
        trained (the bottleneck's always do) with one pass over the target rows, the rows :meth:`predict`
        sees (AdaBN): running averages gathered on mixed source and target batches lag behind the weights
        and partly describe the source domain. With ``partial=True`` and the domains normalised together in
        training (``domain_batchnorm``), the pass reads every row, each domain weighing half.
    domain_batchnorm : "auto" or bool, default="auto"
        In training, the source rows and the target rows of a batch go through the backbone and the
        bottleneck separately, so that each BatchNorm layer normalises each domain with that domain's own
        batch statistics (domain-specific batch statistics, shared weights); the discriminator sees both.
        Without it, the statistics of the mixed batch normalise both domains: the ablation in
        ``benchmarks/bench_domain_adaptation.py`` shows what that costs every method. ``"auto"``:
        True, except with ``partial=True``: a target that lacks classes has other statistics than the
        source for that reason alone, and normalising it on its own would shift its features.
    lr : float, default=1e-3
        Learning rate of the new layers (bottleneck, head and discriminator).
    max_epochs : int, default=10
        Passes over the source rows.
    batch_size : int, default=32
        Rows per step, half source and half target.
    module : type, default=DomainAdaptationNetwork
        The network, built by :meth:`initialize` from the cut backbone, its output width, the number of
        classes, ``dropout``, ``bottleneck_dim``, ``discriminator_dim``, ``adversarial`` (the method for
        DANN and CDAN, else None), ``n_sources`` (the source domains) and ``module__*`` parameters: a
        subclass of :class:`DomainAdaptationNetwork` changes the new layers.

    Attributes
    ----------
    module_ : DomainAdaptationNetwork
        The trained network.
    classes_ : ndarray of shape (n_classes,)
        The source labels.
    preprocess_ : callable or None
        The preprocessing applied to each image.
    device_ : torch.device
        Where the network is: ``device`` resolved (``"auto"``) at the last call.
    history_ : skorch.History
        Losses and accuracies (of labelled rows) per epoch.
    class_weights_ : ndarray of shape (n_classes,)
        With ``partial=True``, the weight of each source class after the last epoch (1 for a class the
        target predictions hold at least as often as the source rows do); ones otherwise.

    See Also
    --------
    sktransfer.domain_adaptation.FeatureAlignmentClassifier : CORAL and subspace alignment on embeddings.
    sktransfer.domain_adaptation.prediction_entropy_scorer : model selection without target labels.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from sktransfer import DomainAdaptedClassifier
    >>> tiny_cnn = nn.Sequential(
    ...     nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    ... )
    >>> rng = np.random.default_rng(0)
    >>> source = rng.integers(0, 128, size=(16, 16, 16, 3), dtype=np.uint8)
    >>> X = np.concatenate([source, source + 100])  # the target domain is brighter
    >>> y = np.array(["a", "b"] * 8 + [-1] * 16, dtype=object)
    >>> clf = DomainAdaptedClassifier(method="coral", model=tiny_cnn, max_epochs=2, device="cpu")
    >>> clf.fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        **TransferClassifier._parameter_constraints,
        "method": [StrOptions(set(METHODS))],
        "trade_off": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "alignment_layer": [StrOptions({"logits", "bottleneck"})],
        "covariance_momentum": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="left")],
        "bottleneck_dim": [Interval(Integral, 1, None, closed="left")],
        "discriminator_dim": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "domain_batchnorm": [StrOptions({"auto"}), "boolean"],
        "self_training_epochs": [Interval(Integral, 0, None, closed="left"), None],
        "pseudo_label_threshold": [Interval(Real, 0, 1, closed="both")],
        "pseudo_label_balance": ["boolean"],
        "partial": ["boolean"],
    }

    def __init__(
        self,
        method="dann",
        model=OFFLINE_MODEL_NAME,
        weights="DEFAULT",
        trade_off="auto",
        alignment_layer="logits",
        covariance_momentum="auto",
        bottleneck_dim=256,
        discriminator_dim="auto",
        self_training_epochs=None,
        pseudo_label_threshold=0.9,
        pseudo_label_balance=True,
        partial=False,
        strategy="full",
        layer=None,
        pooling="avg",
        dropout=0.0,
        freeze_batchnorm="auto",
        recalibrate_batchnorm=True,
        domain_batchnorm="auto",
        lr=1e-3,
        backbone_lr_ratio="auto",
        layer_decay=1.0,
        weight_decay=0.01,
        label_smoothing=0.0,
        lr_schedule="cosine",
        warmup="auto",
        freeze_epochs=1,
        unfreeze_epochs=3,
        lora_rank=8,
        lora_alpha=16,
        augment=None,
        precompute_features=True,
        early_stopping=False,
        patience=5,
        validation_fraction=0.1,
        checkpoint_dir=None,
        max_epochs=10,
        batch_size=32,
        preprocess=None,
        num_workers=0,
        device="auto",
        precision="float32",
        accelerator=None,
        random_state=None,
        verbose=0,
        *,
        module=DomainAdaptationNetwork,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.AdamW,
        train_split=None,
        **kwargs,
    ):
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            device=device,
            verbose=verbose,
            **kwargs,
        )
        self.method = method
        self.domain_batchnorm = domain_batchnorm
        self.model = model
        self.weights = weights
        self.trade_off = trade_off
        self.alignment_layer = alignment_layer
        self.covariance_momentum = covariance_momentum
        self.bottleneck_dim = bottleneck_dim
        self.discriminator_dim = discriminator_dim
        self.self_training_epochs = self_training_epochs
        self.pseudo_label_threshold = pseudo_label_threshold
        self.pseudo_label_balance = pseudo_label_balance
        self.partial = partial
        self.strategy = strategy
        self.layer = layer
        self.pooling = pooling
        self.dropout = dropout
        self.freeze_batchnorm = freeze_batchnorm
        self.recalibrate_batchnorm = recalibrate_batchnorm
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.lr_schedule = lr_schedule
        self.warmup = warmup
        self.freeze_epochs = freeze_epochs
        self.unfreeze_epochs = unfreeze_epochs
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.augment = augment
        self.precompute_features = precompute_features
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.checkpoint_dir = checkpoint_dir
        self.preprocess = preprocess
        self.num_workers = num_workers
        self.precision = precision
        self.accelerator = accelerator
        self.random_state = random_state

    def fit(self, X, y, sample_domain=None, **fit_params):
        """Train on the labelled source rows and the target rows of X.

        Parameters
        ----------
        X : images or 2-D feature matrix
            Source and target rows together.
        y : array-like of shape (n_samples,)
            Labels of source rows; -1 marks target rows.
        sample_domain : array-like of shape (n_samples,) or None
            Positive for source rows, negative for target rows (whose labels are then ignored). Request it
            with ``set_fit_request(sample_domain=True)`` to route it through Pipeline and GridSearchCV.
        **fit_params : dict
            Passed to skorch.

        Returns
        -------
        self
        """
        return self._fit(X, y, fit_params, sample_domain=sample_domain)

    def partial_fit(self, X, y, classes=None, sample_domain=None, **fit_params):
        """Train ``max_epochs`` more epochs; the first call initialises. See :meth:`fit`."""
        return self._partial_fit(X, y, fit_params, classes=classes, sample_domain=sample_domain)

    def _targets(self, y, n_samples, reset=True, classes=None, sample_domain=None):
        """Class indices of labelled rows, -1 for target rows; source k's rows shifted by k * n_classes."""
        refuse_minus_one_among_classes(self.classes, "classes")
        refuse_minus_one_among_classes(classes, "partial_fit's classes")
        split = split_domains(y, sample_domain, n_samples)
        if self.method != "source_only":
            warn_of_a_single_target_row(split, f"{type(self).__name__}(method={self.method!r})")
        self._refuse_batches_too_small_for_batchnorm(split.target.any())
        return self._source_codes(y, split, reset=reset, classes=classes, sample_domain=sample_domain)

    _network_kwarg_parameters = {"adversarial": "method"}  # noqa: RUF012 (read-only)

    def _network_kwargs(self):
        return {
            "bottleneck_dim": self.bottleneck_dim,
            "discriminator_dim": self._discriminator_dim(),
            "adversarial": self.method if self.method in ADVERSARIAL else None,
            "n_sources": getattr(self, "_n_sources", 1),
        }

    def _architecture_settings(self):
        # The width as set: "auto" follows model and bottleneck_dim, recorded themselves; the resolved width
        # would report discriminator_dim changed when only bottleneck_dim was.
        return super()._architecture_settings() | {"discriminator_dim": self.discriminator_dim}

    def _discriminator_dim(self):
        """The discriminator's hidden width, ``"auto"`` resolved."""
        if self.discriminator_dim != "auto":
            return self.discriminator_dim
        return self.bottleneck_dim if self.model is None else DISCRIMINATOR_DIM

    def embed(self, X):
        """The bottleneck features of X, what the head reads (and what DANN's discriminator sees).

        Parameters
        ----------
        X : images or 2-D feature matrix

        Returns
        -------
        features : ndarray of shape (n_samples, bottleneck_dim)
        """
        return self._embed_and_predict_proba(X)[0]

    def _embed_and_predict_proba(self, X):
        """``embed(X)`` and ``predict_proba(X)`` from one pass of the network, for the scorers that read both."""

        def probabilities_then_features(dataset):
            nonlinearity = self._get_predict_nonlinearity()
            batches = [
                torch.cat([nonlinearity(logits).float(), bottleneck.float()], dim=1).numpy()
                for logits, bottleneck in self.forward_iter(dataset)
            ]
            return np.concatenate(batches)

        joined = self._run_fitted(X, probabilities_then_features)  # in predict_proba's order of rows
        n_classes = len(self.classes_)
        return np.ascontiguousarray(joined[:, n_classes:]), checked_probabilities(joined[:, :n_classes])
