"""Every accepted form of X as a lazy, indexable source of images, validated up front.

Accepted X: numpy arrays and torch tensors of images (N×H×W×C, N×C×H×W, or grayscale N×H×W; uint8, other
integers in [0, 255], or floats in [0, 1]), a sequence of such images of any sizes, a sequence of PIL images,
a sequence of image file paths (decoded lazily, in DataLoader workers), and a pandas Series, one-column
DataFrame or (n, 1) array of paths. A photo (file or PIL image) is turned as its EXIF orientation says, as
viewers show it, not read lying on its side as the camera stored it. A PIL image (or file) of a wider mode
than 8 bits (16- or 32-bit integers, floats) is read as its values on Pillow's 0-255 scale, not clipped at 255
as Pillow's RGB conversion would; values outside that scale are refused. A 2-D array is a batch of feature
vectors, for networks that read vectors.

Each image comes out as a (3, H, W) tensor, uint8 or float in [0, 1]: grayscale is replicated to three
channels and an alpha channel dropped (the sources that load them are in ``_image_sources``). Nothing the
user passed is modified.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.utils.validation import validate_data

from ._image_sources import ArrayImages, ImageFiles, ImageList, PILImages, VectorRows
from ._pixel_values import check_values, sample_error
from ._stacklevel import caller_stacklevel
from .backbones import available_model_names, reads_text
from .text_encoders import (
    OFFLINE_TEXT_MODEL_NAME,
    is_loaded_transformers_model,
    loaded_transformers_model_message,
)
from .texts import as_text_source, is_pandas, looks_like_text

_CHANNEL_COUNTS = (1, 3, 4)


class GrayscaleStripsWarning(UserWarning):
    """A 3-D array read as grayscale images, most likely one colour image, unbatched.

    It warns where the last axis is 3 or 4 long and the second longer (one H×W×C image), and for a torch
    tensor, channels-first, where the first axis is 3 or 4 long and the others longer (one C×H×W image, as
    ``torchvision.io.read_image`` gives). A NumPy array of 3 or 4 grayscale images of any size does not warn.
    """


class AmbiguousLayoutWarning(UserWarning):
    """Images whose second and last axes could both hold the colour channels (an image 1, 3 or 4 pixels
    high or wide): arrays are read channels-last, tensors channels-first, as everywhere else."""


def _check_not_empty(count):
    if count == 0:
        raise ValueError("X is empty: it holds 0 images; at least one is required.")


def _tensor_to_numpy(tensor):
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def _is_path(value):
    return isinstance(value, str | os.PathLike)


def as_image_source(X):
    """Validate X and wrap it as an :class:`ImageSource`.

    Raises ``ValueError`` (``FileNotFoundError`` for a missing file) naming the sample at fault before any
    image is run through a network.

    Examples
    --------
    >>> import numpy as np
    >>> source = as_image_source(np.zeros((2, 8, 8, 3), dtype=np.uint8))
    >>> len(source), tuple(source.load(0).shape)
    (2, (3, 8, 8))
    """
    if is_pandas(X):
        return _from_pandas(X)
    if _is_path(X):
        raise _single_path_error(os.fspath(X))
    if isinstance(X, Image.Image):  # as an array it would be rows of pixels, read as grayscale strips
        raise ValueError(
            f"X is a single PIL image ({X.mode}, {X.size[0]}×{X.size[1]}); pass a list: [image]."
        )
    if isinstance(X, list | tuple):
        return _from_sequence(X)
    if isinstance(X, torch.Tensor):
        return _from_array(_tensor_to_numpy(X), channels_first=True)
    array = np.asarray(X)
    if (array.ndim == 1 and array.dtype.kind in "OUS") or _is_column_of_items(array):
        return _from_sequence(list(array.ravel()))
    if _is_table_of_strings(array):
        raise ValueError(
            f"X is a {array.shape} array of strings; pass the one column that holds the image paths, e.g. "
            "X[:, [0]] or X[:, 0], and the labels as y."
        )
    return _from_array(array, channels_first=False)


def _single_path_error(path):
    if os.path.isdir(path):
        return ValueError(
            f"X is the folder {path!r}, not a sequence of images. For a folder with one sub-folder of images "
            "per class, sktransfer.datasets.load_image_folder(path) returns the list of image paths and their "
            "labels, X and y; otherwise pass the list of image paths."
        )
    return ValueError(f"X is the single path {path!r}; pass a list of image paths, e.g. [{path!r}].")


def validated_source(estimator, X, *, reset):
    """X validated for ``estimator`` (which has a ``model`` parameter) as an :class:`ImageSource`.

    For a text encoder, X is validated as texts (a :class:`~sktransfer.texts.TextSource`); text given to an
    image model is refused, naming both.

    2-D X is a batch of feature vectors, validated by scikit-learn's ``validate_data`` (which records
    ``n_features_in_`` when ``reset``); it is refused for a model given by name, since those read images.
    An estimator fitted on vectors expects vectors again, and one fitted on images expects images.
    """
    # Decided at fit and kept: a fitted (or unpickled) encoder reads texts even where its folder is gone.
    text = getattr(estimator, "_reads_text", None)
    if reset or text is None:
        text = reads_text(estimator.model)
    elif looks_like_text(X) != text and reads_text(estimator.model) != text:
        raise ValueError(
            f"{type(estimator).__name__} was fitted to read {'texts' if text else 'images'}, and model has changed "
            f"since to {_name(estimator.model)}, which reads {'images' if text else 'texts'}: call fit again to "
            "load it."
        )
    if reset:
        estimator._reads_text = text
    if text:
        if getattr(estimator, "preprocess", None) is not None:
            raise ValueError(
                f"preprocess={estimator.preprocess!r} applies to images, but model={estimator.model!r} is a text "
                "encoder, which tokenises texts itself: leave preprocess=None."
            )
        if reset and hasattr(estimator, "n_features_in_"):
            del estimator.n_features_in_
        return as_text_source(X, estimator.model)
    if estimator.model is not None and looks_like_text(X):
        if is_loaded_transformers_model(estimator.model):
            raise ValueError(loaded_transformers_model_message(estimator.model))
        first = X.iloc[0] if is_pandas(X) and X.ndim == 1 else np.asarray(X, dtype=object).ravel()[0]
        model = estimator.model
        if isinstance(model, str) and model not in available_model_names() and not os.path.exists(model):
            raise ValueError(
                f"X holds text (sample 0, {str(first)[:60]!r}), but model={model!r} names no image model and "
                "no text encoder found here: a bare Hugging Face name counts once the Hugging Face cache "
                "holds it. Give the full hub id ('org/name', such as 'google-bert/bert-base-uncased'), which "
                f"transformers downloads, a local model folder, or model='{OFFLINE_TEXT_MODEL_NAME}'."
            )
        raise ValueError(
            f"X holds text (sample 0, {str(first)[:60]!r}, is no file), but model={_name(model)} reads "
            f"images: pass image arrays, PIL images or image file paths, or a text encoder such as "
            f"model='{OFFLINE_TEXT_MODEL_NAME}' for texts."
        )
    fitted_on_vectors = not reset and hasattr(estimator, "n_features_in_")
    if not (fitted_on_vectors or is_vector_input(X)):
        if reset and hasattr(estimator, "n_features_in_"):
            del estimator.n_features_in_
        return as_image_source(X)
    if isinstance(estimator.model, str):
        raise ValueError(
            f"X is 2-D (one feature vector per row), but model={estimator.model!r} reads images: pass images "
            "as N×H×W×C, N×C×H×W or N×H×W arrays, file paths or PIL images."
        )
    if not reset and not hasattr(estimator, "n_features_in_"):
        name = type(estimator).__name__
        raise ValueError(
            f"X is 2-D (feature vectors), but {name} has no n_features_in_, the width of the vectors that fit "
            f"records: it was fitted on images, and X must hold images too; or, initialised without fit "
            f"(initialize(), then load_params()), set clf.n_features_in_ = {np.shape(X)[1]} first."
        )
    if getattr(estimator, "preprocess", None) is not None:
        raise ValueError(
            f"preprocess={estimator.preprocess!r} applies to images, but X is 2-D, feature vectors, which "
            "reach the network as they are: leave preprocess=None (or pass images)."
        )
    X = validate_data(estimator, X, reset=reset, dtype=[np.float32, np.float64])
    return VectorRows(X)


def _name(model):
    return repr(model) if isinstance(model, str) else type(model).__name__


def is_vector_input(X):
    """True when X is a 2-D table of numbers (feature vectors rather than images), sparse included."""
    if is_pandas(X):  # a table with any column of text (paths, labels) is no table of feature vectors
        return X.ndim == 2 and all(dtype.kind in "biuf" for dtype in X.dtypes)
    if isinstance(X, list | tuple):  # rows of numbers, not nested lists of pixels (an image's tolist())
        return (
            len(X) > 0
            and isinstance(X[0], list | tuple)
            and not any(_is_path(v) or isinstance(v, list | tuple | np.ndarray) for v in X[0])
        )
    if _is_column_of_items(X) or _is_table_of_strings(X):  # paths in a column (ColumnTransformer's), or
        return False  # beside labels: no feature vectors
    shape = getattr(X, "shape", None)
    if shape is None and hasattr(X, "__array__"):
        shape = np.asarray(X).shape
    return shape is not None and len(shape) == 2


def _is_column_of_items(X):
    """Whether X is an (n, 1) array of strings or objects: one column of paths, say, not a feature."""
    return isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == 1 and X.dtype.kind in "OUS"


def _is_table_of_strings(X):
    """Whether X is a 2-D array of strings (paths beside their labels, say), never feature vectors."""
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.size == 0:
        return False
    return X.dtype.kind in "US" or (X.dtype.kind == "O" and isinstance(X.flat[0], str))


def _from_pandas(X):
    if X.ndim == 2:
        if X.shape[1] != 1:
            text = [str(name) for name, dtype in X.dtypes.items() if dtype.kind not in "biuf"]
            example = f"X[[{text[0]!r}]]" if text else "X[['path']]"
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns ({list(map(str, X.columns))[:10]}); pass the one "
                f"column that holds the image paths, e.g. {example}, and the labels as y."
            )
        X = X.iloc[:, 0]
    return _from_sequence(list(X.to_numpy()))


def _from_sequence(items):
    _check_not_empty(len(items))
    first = items[0]
    if _is_path(first):
        return _files(items)
    if isinstance(first, Image.Image):
        for index, item in enumerate(items):
            if not isinstance(item, Image.Image):
                raise sample_error(f"sample {index} is a {type(item).__name__}, but sample 0 is a PIL image.")
        return PILImages(items)
    if isinstance(first, np.ndarray | torch.Tensor):
        return _image_list(items)
    try:
        return _from_array(np.asarray(items), channels_first=False)
    except ValueError as exc:  # nested lists (images' tolist()) of different sizes make no one array
        if not str(exc).startswith("setting an array element with a sequence"):
            raise
    return _image_list([_nested_list_image(item, index) for index, item in enumerate(items)])


def _nested_list_image(item, index):
    """One image given as nested lists of pixel values, as an array."""
    try:
        return np.asarray(item)
    except ValueError as exc:
        raise sample_error(
            f"sample {index} is nested lists of uneven lengths, not an image's rows of pixels ({exc})."
        ) from exc


def _files(items):
    paths = []
    for index, item in enumerate(items):
        if not _is_path(item):
            raise sample_error(f"sample {index} is a {type(item).__name__}, but sample 0 is a file path.")
        path = os.fspath(item)
        if os.path.isdir(path):
            raise sample_error(
                f"sample {index}, {path!r}, is a folder, not an image file: pass the image files inside it "
                "(sktransfer.datasets.load_image_folder lists those of a folder with one sub-folder per class)."
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"X: sample {index}: image file {path!r} does not exist.")
        try:
            with Image.open(path):
                pass
        except Exception as exc:
            raise sample_error(f"sample {index}, file {path!r}, is not a readable image: {exc}") from exc
        paths.append(str(Path(path).resolve()))
    return ImageFiles(paths)


def _image_list(items):
    images, ambiguous = [], {}  # the samples whose layout reads either way, by whether read channels-first
    for index, item in enumerate(items):
        if not isinstance(item, np.ndarray | torch.Tensor):
            raise sample_error(f"sample {index} is a {type(item).__name__}, but sample 0 is an array.")
        channels_first = isinstance(item, torch.Tensor)
        array = _tensor_to_numpy(item) if channels_first else item
        if array.ndim not in (2, 3):
            raise sample_error(
                f"sample {index} has shape {array.shape}; each image must be H×W, H×W×C or C×H×W."
            )
        if array.ndim == 3 and _reads_either_way((1, *array.shape)):
            ambiguous.setdefault(channels_first, []).append(index)
        array = array[None] if array.ndim == 2 else _channels_first(array[None], channels_first, index)[0]
        if 0 in array.shape:
            raise sample_error(
                f"sample {index} has shape {tuple(item.shape)}: images must have at least one pixel."
            )
        images.append(array)
    for channels_first, indices in ambiguous.items():  # one warning for all of them, not one per sample
        _warn_of_ambiguous_layout(tuple(items[indices[0]].shape), channels_first, indices)
    check_values(images)
    return ImageList(images)


def _from_array(array, channels_first):
    if array.ndim >= 1:
        _check_not_empty(len(array))
    if array.ndim == 3:
        layout = _unbatched_colour_layout(array.shape, channels_first)
        if layout is not None:
            warnings.warn(
                f"X of shape {array.shape} is read as {array.shape[0]} grayscale images of "
                f"{array.shape[1]}×{array.shape[2]} pixels. For one colour image, pass X[None] ({layout}).",
                GrayscaleStripsWarning,
                stacklevel=caller_stacklevel(),
            )
        array = array[:, None]
    elif array.ndim == 4:
        array = _channels_first(array, channels_first, None)
    else:
        raise ValueError(
            f"X has shape {array.shape}: images must be N×H×W (grayscale), N×H×W×C or N×C×H×W, a 2-D array "
            "is read as feature vectors, and a 1-D sequence as image file paths."
        )
    if 0 in array.shape:
        raise ValueError(f"X has shape {array.shape}: images must have at least one pixel.")
    check_values(array)
    return ArrayImages(array)


def _unbatched_colour_layout(shape, channels_first):
    """The batched layout of one colour image that a 3-D ``shape`` most likely is, or None for grayscale ones.

    H×W×C where the last axis is 3 or 4 long and the second longer; C×H×W for a tensor (torchvision's layout,
    as ``read_image`` returns one image) whose first axis is 3 or 4 long and the others longer.
    """
    if shape[-1] in (3, 4) and shape[1] > 4:
        return "N×H×W×C"
    if channels_first and shape[0] in (3, 4) and min(shape[1:]) > 4:
        return "N×C×H×W"
    return None


def _warn_of_ambiguous_layout(shape, channels_first, indices):
    """Warn that ``shape`` (X's, or the shape of the samples at ``indices``, the first one's) reads either
    way, naming the layout chosen."""
    batched = indices is None
    if batched:
        where = f"X has shape {tuple(shape)}"
    elif len(indices) == 1:
        where = f"X: sample {indices[0]} has shape {tuple(shape)}"
    else:
        listed = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
        where = f"X: {len(indices)} samples ({listed}) have shapes like sample {indices[0]}'s {tuple(shape)}"
    if channels_first:
        chosen, other = ("N×C×H×W", "N×H×W×C") if batched else ("C×H×W", "H×W×C")
        fix = "X.permute(0, 3, 1, 2)" if batched else "image.permute(2, 0, 1)"
        kind = "a tensor is read channels-first"
    else:
        chosen, other = ("N×H×W×C", "N×C×H×W") if batched else ("H×W×C", "C×H×W")
        fix = "np.moveaxis(X, 1, -1)" if batched else "np.moveaxis(image, 0, -1)"
        kind = "an array is read channels-last"
    warnings.warn(
        f"{where}, which could be {chosen} or {other}: {kind}, as {chosen}. If it is {other}, pass {fix}.",
        AmbiguousLayoutWarning,
        stacklevel=caller_stacklevel(),
    )


def _reads_either_way(shape):
    """Whether a batch of ``shape`` could hold its colour channels on its second axis or on its last."""
    return shape[1] in _CHANNEL_COUNTS and shape[-1] in _CHANNEL_COUNTS


def _channels_first(array, prefer_channels_first, index):
    """(N, H, W, C) or (N, C, H, W) -> (N, C, H, W) view; tensors read as channels-first, arrays not.

    X whose layout reads either way warns here (``index`` None); a list's samples (``index``, each given a
    batch axis) are warned of together by :func:`_image_list`."""
    first, last = array.shape[1] in _CHANNEL_COUNTS, array.shape[-1] in _CHANNEL_COUNTS
    if index is None and _reads_either_way(array.shape):
        _warn_of_ambiguous_layout(array.shape, prefer_channels_first, None)
    if first and (prefer_channels_first or not last):
        return array
    if last:
        return np.moveaxis(array, -1, 1)
    if index is None:
        where, shape, expected = "X", array.shape, "N×H×W×C or N×C×H×W"
    else:  # one image, given a batch axis here
        where, shape, expected = f"X: sample {index}", array.shape[1:], "H×W×C or C×H×W"
    raise ValueError(
        f"{where} has shape {shape}: no axis holds 1, 3 or 4 colour channels "
        f"(expected {expected} with C = 1 grayscale, 3 RGB or 4 RGBA)."
    )
