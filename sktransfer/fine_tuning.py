"""FineTuneClassifier: a pretrained network fine-tuned with a new head, as a scikit-learn classifier."""

import torch
from torch import nn

from ._distillation import DISTILLATION_CONSTRAINTS, DistillationMixin
from ._network import BackboneWithHead
from ._regularization import REGULARIZATION_CONSTRAINTS, RegularizationMixin
from ._training_docs import document_parameters
from .backbones import OFFLINE_MODEL_NAME
from .training import TransferClassifier


@document_parameters
class FineTuneClassifier(RegularizationMixin, DistillationMixin, TransferClassifier):
    """Fine-tune a pretrained network with a new head on labelled images, as a scikit-learn classifier.

    A skorch ``NeuralNetClassifier``: the backbone is loaded in :meth:`fit`, a linear head is sized from
    the classes of ``y``, and the two train with AdamW under a warmed-up schedule, the backbone at a smaller
    learning rate than the head. Labels may be of any type; :meth:`predict` returns them as given. All of
    skorch keeps working: dunder parameters, ``callbacks``, ``history``, ``train_split``,
    ``save_params`` / ``load_params``. ``regularization="l2_sp"`` keeps the backbone near its pretrained
    weights; ``teacher`` distils a fitted classifier into the network, on labelled and unlabelled (-1) rows.

    Parameters
    ----------
    strategy : {"gradual", "lp_ft", "full", "linear_probe", "bitfit", "lora"}, default="gradual"
        What trains. ``"linear_probe"``: the head alone. ``"full"``: everything from the first epoch.
        ``"lp_ft"``: the head alone for ``freeze_epochs`` epochs, then everything (LP-FT). ``"gradual"``: the
        head alone for ``freeze_epochs`` epochs, then the backbone stages from the top down, over
        ``unfreeze_epochs`` epochs. ``"bitfit"``: the head and the backbone's biases and norm layers only.
        ``"lora"``: the head and low-rank adapters (LoRA, Hu et al. 2021; ``lora_rank``, ``lora_alpha``) added
        to the backbone's attention and linear layers (transformers: text encoders, torchvision ViTs; every
        ``nn.Linear`` but the pooler of a Hugging Face model that the embedding does not read), whose own
        weights stay frozen; the trainable share is in ``history_[:, "trainable_fraction"]``.
        Frozen stages stay in evaluation mode, so their BatchNorm statistics do not change.
    regularization : {"l2_sp"} or None, default=None
        ``"l2_sp"``: L2-SP (Li, Grandvalet and Davoine 2018). The loss of each training batch gets a penalty
        ``regularization_strength / 2 * ||w - w0||²`` that pulls the backbone's trainable weights w toward
        the pretrained ones w0 instead of toward zero; the backbone then gets no weight decay, and the new
        head keeps ``weight_decay``. ``train_loss`` includes the penalty. Needs pretrained weights (neither
        ``weights=None`` nor ``model=None``). w0 is copied when the network is built, and ``partial_fit`` or
        a warm fit keeps pulling toward it (also after ``load_params``); set after fitting without it, it
        raises there (refit). With ``strategy="lora"`` the pretrained weights stay frozen and the penalty
        holds the adapters near their initialisation (the pretrained network), in place of their weight
        decay; with ``"linear_probe"`` nothing in the backbone trains, and fit warns that the penalty is
        ignored.
    regularization_strength : float, default=0.01
        alpha of L2-SP, against the mean loss of a batch as in the paper. 0.01, the low end of the range
        the paper works in (0.01 to 0.1): in ``benchmarks/bench_regularization.py`` (handwritten digits, far
        from ImageNet) it did as well as 0.1 or better, and pulling harder toward the ImageNet weights cost
        accuracy with 30 labels per class.
    teacher : classifier or None, default=None
        Knowledge distillation (Hinton, Vinyals and Dean 2015): a fitted scikit-learn classifier with
        ``predict_proba`` (a Pipeline of a large backbone and a logistic regression, a fitted
        FineTuneClassifier, ...) whose class probabilities the network learns to match, next to the labels.
        With a teacher, rows with ``y == -1`` are unlabelled and learn from it alone, and the classes are the
        teacher's ``classes_``, which must hold every label of y (without one, -1 is a label like any
        other). ``teacher.predict_proba(X)`` runs once per ``fit``/``partial_fit``, on X as given; the
        teacher is never fitted or changed. A clone of the estimator (GridSearchCV, cross_val_score) clones
        the teacher unfitted: pass ``sklearn.frozen.FrozenEstimator(teacher)``, which clones keep as it is.
        The teacher is a parameter and pickles with the estimator; ``set_params(teacher=None)`` first saves a
        student that only predicts.
    temperature : float, default=4.0
        T of the distillation: the teacher's probabilities are softened as p^(1/T), renormalised (its
        logits divided by T, when the probabilities are their softmax), the network's logits are divided
        by T, and their Kullback-Leibler divergence is multiplied by T² so that its gradients keep their
        size.
    distillation_weight : float, default=0.9
        w in the loss (1 - w) * cross-entropy(labelled rows) + w * T² * KL(teacher || network)(all rows),
        each term a mean over its rows. Hinton et al. weigh the labels much less than the teacher.
    lr : float, default=1e-3
        Learning rate of the head.
    max_epochs : int, default=10
        Passes over the training data.
    batch_size : int, default=32
        Images per step.
    module : type, default=BackboneWithHead
        The network, built by :meth:`initialize` from the cut backbone, its output width, the number of
        classes, ``dropout`` and ``module__*`` parameters: a subclass of
        :class:`~sktransfer._network.BackboneWithHead` changes the head.

    Attributes
    ----------
    module_ : BackboneWithHead
        The fine-tuned network: ``module_.backbone`` and ``module_.head``.
    classes_ : ndarray of shape (n_classes,)
        The labels, in the order of :meth:`predict_proba`'s columns.
    preprocess_ : callable or None
        The preprocessing applied to each image.
    device_ : torch.device
        Where the network is: ``device`` resolved (``"auto"``) at the last call; ``device`` itself keeps
        the value set.
    history_ : skorch.History
        Losses, accuracies, learning rates and trainable stages per epoch.
    n_features_in_ : int
        Number of features, only when fitted on 2-D feature vectors.

    See Also
    --------
    sktransfer.PretrainedFeatureExtractor : embeddings for any scikit-learn estimator; a linear probe
        without gradient steps through the backbone.

    Examples
    --------
    >>> from sktransfer import FineTuneClassifier
    >>> from sktransfer.datasets import load_textures
    >>> X, y = load_textures(n_per_class=4, patch_size=32)
    >>> clf = FineTuneClassifier(max_epochs=3, device="cpu", random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).tolist()
    ['brick', 'brick', 'brick']
    >>> clf.history[:, "trainable_stages"]  # gradual unfreezing of the 18 stages, top first
    [0, 6, 12]
    >>> clf.predict_proba(X[:1]).shape
    (1, 5)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        **TransferClassifier._parameter_constraints,
        **REGULARIZATION_CONSTRAINTS,
        **DISTILLATION_CONSTRAINTS,
    }

    def __init__(
        self,
        model=OFFLINE_MODEL_NAME,
        weights="DEFAULT",
        strategy="gradual",
        layer=None,
        pooling="avg",
        dropout=0.0,
        freeze_batchnorm="auto",
        recalibrate_batchnorm=True,
        lr=1e-3,
        backbone_lr_ratio="auto",
        layer_decay=1.0,
        weight_decay=0.01,
        regularization=None,
        regularization_strength=0.01,
        label_smoothing=0.0,
        teacher=None,
        temperature=4.0,
        distillation_weight=0.9,
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
        module=BackboneWithHead,
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
        self.model = model
        self.weights = weights
        self.strategy = strategy
        self.layer = layer
        self.pooling = pooling
        self.dropout = dropout
        self.freeze_batchnorm = freeze_batchnorm
        self.recalibrate_batchnorm = recalibrate_batchnorm
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.regularization = regularization
        self.regularization_strength = regularization_strength
        self.label_smoothing = label_smoothing
        self.teacher = teacher
        self.temperature = temperature
        self.distillation_weight = distillation_weight
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
