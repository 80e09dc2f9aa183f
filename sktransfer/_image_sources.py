"""The kinds of image source (an array, a list of arrays, PIL images, files), each loading (3, H, W) tensors."""

from functools import partial

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from ._hashing import array_key, file_key, pil_image_key
from ._pixel_values import is_eight_bit, sample_error, upright, wide_pil_pixels


class ImageSource:
    """Base class: a sequence of images that loads one at a time (or a batch, where that is cheaper)."""

    uniform = False  # True when every image has the same size, so batches can be preprocessed at once

    def __init__(self, items):
        self.items = items  # the user's data, never written to

    def __len__(self):
        return len(self.items)

    def load(self, index):
        """The image at ``index`` as a (3, H, W) tensor, uint8 or float in [0, 1]."""
        raise NotImplementedError

    def fingerprints(self):
        """One 16-byte key per image, which changes whenever the image's content does (the cache's keys).

        Arrays are read in place, an image at a time: no copy of X is made.
        """
        return [array_key(image) for image in self.items]


class ArrayImages(ImageSource):
    """A (N, C, H, W) view of an array of images, sliced batch by batch."""

    uniform = True

    def load_batch(self, indices):
        return _as_tensor(self.items[np.asarray(indices)])  # fancy indexing copies

    def load(self, index):
        return self.load_batch([index])[0]


class VectorRows(ArrayImages):
    """A 2-D float array whose rows go to the network as they are (networks that read vectors)."""

    def load_batch(self, indices):
        return torch.from_numpy(np.asarray(self.items[np.asarray(indices)], dtype=np.float32))


class ImageList(ImageSource):
    """A sequence of in-memory (C, H, W) images that may differ in size."""

    def load(self, index):
        return _as_tensor(np.array(self.items[index])[None])[0]


class PILImages(ImageSource):
    """A sequence of PIL images, converted to RGB when loaded (wider modes read as their values)."""

    def load(self, index):
        return _read_pil(index, partial(_pil_tensor, self.items[index], index))

    def fingerprints(self):
        return [_read_pil(index, partial(pil_image_key, image)) for index, image in enumerate(self.items)]


def _read_pil(index, read):
    """``read()`` of sample ``index``, naming it where Pillow cannot give its pixels (a closed file, say)."""
    try:
        return read()
    except Exception as exc:  # Pillow asserts that the file is open, with no message
        if isinstance(exc, ValueError) and str(exc).startswith("X: "):  # our own, about its values
            raise
        raise _unreadable_pil(index, exc) from exc


def _unreadable_pil(index, exc):
    # how Pillow meets a closed file: a bare assertion, a missing file pointer, "Operation on closed image";
    # an open file whose data is cut short or damaged raises an OSError of its own ("image file is truncated")
    damaged = isinstance(exc, OSError) and "closed" not in str(exc) and not isinstance(exc, ValueError)
    closed_file = not damaged and (isinstance(exc, AssertionError | AttributeError) or "closed" in str(exc))
    if damaged:
        advice = " Its file's data is cut short or damaged: check or replace the file."
    elif closed_file:
        advice = (
            " An image opened in a with block is closed at its end, before its pixels are loaded: call "
            "image.load() (or keep image.copy()) inside the block, or pass the file paths."
        )
    else:
        advice = " Convert it first to a mode that Pillow turns into RGB, such as 'RGB', 'RGBA' or 'LA'."
    return sample_error(
        f"sample {index} is a PIL image whose pixels could not be read ({type(exc).__name__}: {exc}).{advice}"
    )


class ImageFiles(ImageSource):
    """Image files decoded lazily by Pillow (torchvision's own decoders are deprecated since 0.29)."""

    def load(self, index):
        path = self.items[index]
        try:
            with Image.open(path) as image:
                return _pil_tensor(image, index)
        except Exception as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(f"X: sample {index} is a PIL image"):
                raise ValueError(f"{exc} (file {path!r})") from None  # its values, not its decoding
            raise sample_error(
                f"sample {index}, file {path!r}, could not be decoded as an image: {exc}"
            ) from exc

    def fingerprints(self):
        return [file_key(path) for path in self.items]


def _pil_tensor(image, index):
    """(3, H, W) tensor of a PIL image, turned upright: uint8 for the 8-bit modes, wider modes as arrays are."""
    image = upright(image)
    if is_eight_bit(image.mode):
        return pil_to_tensor(image.convert("RGB"))
    return _as_tensor(wide_pil_pixels(image, index)[None, None])[0]


def _as_tensor(batch):
    """A (N, C, H, W) array we own -> (N, 3, H, W) tensor, uint8 or float in [0, 1]."""
    if batch.dtype.kind in "ui":
        batch = batch.astype(np.uint8, copy=False)  # values were checked to lie in [0, 255]
    elif batch.dtype == np.longdouble and np.longdouble != np.float64:  # torch has no extended precision
        batch = batch.astype(np.float64)
    elif not batch.dtype.isnative:  # torch reads native byte order only (big-endian FITS data, say)
        batch = batch.astype(batch.dtype.newbyteorder("="))
    tensor = torch.from_numpy(np.ascontiguousarray(batch))
    if tensor.dtype != torch.uint8:
        tensor = tensor.float()
    return _to_three_channels(tensor)


def _to_three_channels(batch):
    """(N, C, H, W) with C in 1, 3, 4 -> (N, 3, H, W): replicate grayscale, drop alpha."""
    if batch.shape[1] == 1:  # a view, where v2's grayscale_to_rgb copies (repeat) and keeps RGBA's alpha
        return batch.expand(-1, 3, -1, -1)
    return batch[:, :3]
