"""Checks of the pixel values of image arrays (dtype, range, finiteness) that copy none of the images."""

import numpy as np
from PIL import ImageMode, ImageOps

_RANGE_CHUNK_BYTES = 1 << 22  # validation reads this much at a time from an array whose samples are scattered


def sample_error(message):
    """A ``ValueError`` about X, whose message names the sample at fault."""
    return ValueError(f"X: {message}")


def check_values(images):
    """Check dtypes and value ranges: integers in [0, 255], floats finite and in [0, 1].

    ``images`` is a 4-D array or a list of 3-D arrays; errors name the first sample at fault. Floats on the
    0-255 scale are refused rather than guessed: a guess from the data would make an image's embedding
    depend on the other images passed with it.
    """
    batch = isinstance(images, np.ndarray)
    dtypes = {images.dtype} if batch else {array.dtype for array in images}
    kinds = {dtype.kind for dtype in dtypes}
    if not kinds <= set("uif"):
        if batch:
            raise ValueError(f"X has dtype {images.dtype}: images must be integers or floats.")
        index = next(i for i, array in enumerate(images) if array.dtype.kind not in "uif")
        raise sample_error(
            f"sample {index} has dtype {images[index].dtype}: images must be integers or floats "
            "(a boolean mask goes in as mask.astype(np.uint8) * 255)."
        )
    if dtypes == {np.dtype(np.uint8)}:
        return
    lows, highs = _per_sample_ranges(images, batch)
    finite = np.isfinite(lows) & np.isfinite(highs)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise sample_error(f"sample {index} contains NaN or infinity.")
    # each sample on the scale of its own dtype: a list may mix integer and float images
    is_float = np.array(
        [dtype.kind == "f" for dtype in ([images.dtype] if batch else [a.dtype for a in images])]
    )
    bad = (lows < 0) | (highs > np.where(is_float, 1, 255))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        expected = (
            "float images must lie in [0, 1] (pixel values 0-255 go in as integers: X.astype(np.uint8))"
            if is_float[0 if batch else index]
            else "integer images must lie in [0, 255]"
        )
        raise sample_error(
            f"sample {index} has values in [{lows[index]:g}, {highs[index]:g}]; {expected}. Pass raw pixels: "
            "the backbone's own preprocessing normalises them."
        )


def _per_sample_ranges(images, batch):
    """Each sample's lowest and highest value (NaN where it holds a NaN), without copying the images.

    A batch is read in chunks of whole samples, each sample's axes in the order they lie in memory, so
    that the samples of a channels-last array (seen channels-first) are read in place.
    """
    if not batch:
        return np.array([np.min(a) for a in images], float), np.array([np.max(a) for a in images], float)
    order = sorted(range(1, images.ndim), key=lambda axis: -abs(images.strides[axis]))
    samples = images.transpose(0, *order)
    lows, highs = np.empty(len(samples)), np.empty(len(samples))
    step = max(1, _RANGE_CHUNK_BYTES // samples[0].nbytes)
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        chunk = chunk.reshape(len(chunk), -1)  # a view where the samples are contiguous, else a chunk's copy
        lows[start : start + step], highs[start : start + step] = chunk.min(axis=1), chunk.max(axis=1)
    return lows, highs


_EXIF_ORIENTATION = 0x0112


def upright(image):
    """A PIL image as viewers show it: turned as its EXIF orientation says, where it says to turn it.

    Cameras and phones store a photo as the sensor read it and record how to turn it for display in its
    EXIF data; without the turn a portrait photo reaches the network lying on its side. An image without the
    tag (or already turned, as ``PIL.ImageOps.exif_transpose`` leaves it) is returned as it is, not copied;
    a turned one is a new image, the user's left as it was. Pillow's ``rotate`` and ``transpose`` keep the
    tag: an image turned by hand is turned again, as a viewer would show it saved; turn photos with
    ``exif_transpose``, which drops the tag.

    Examples
    --------
    >>> from PIL import Image
    >>> photo = Image.new("RGB", (4, 2))
    >>> photo.getexif()[0x0112] = 6  # stored 4 wide and 2 high, shown turned a quarter clockwise
    >>> upright(photo).size, photo.size
    ((2, 4), (4, 2))
    """
    if image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


# A Pillow float image ('F', 0-255 scale) whose brightest value is at most 1% of the scale is black to the
# eye: far likelier an image on the [0, 1] scale, some values a little above 1 (resampling overshoot).
_DARKEST_FLOAT_IMAGE = 255 / 100


def is_eight_bit(mode):
    """Whether a PIL image mode holds 8-bit (or 1-bit) values, which Pillow converts to RGB without loss.

    Examples
    --------
    >>> is_eight_bit("P"), is_eight_bit("I;16"), is_eight_bit("F")
    (True, False, False)
    """
    return ImageMode.getmode(mode).typestr[-2:] in ("u1", "b1")


def wide_pil_pixels(image, index):
    """The (H, W) values of a PIL image of a wider mode (16- or 32-bit integers, floats), on the 0-255 scale.

    Pillow's conversion to RGB clips such values at 255 instead of scaling them, so they are read as they
    are, on Pillow's 0-255 scale (its 'F' mode too, as ``convert("F")`` gives it): values in [0, 255] are an
    image, anything else is refused, naming the sample; so is a float image whose values all lie under 1% of
    that scale (not all 0), most likely made from an array on the [0, 1] scale, which would read as black.
    Floats come back as floats in [0, 1].
    """
    pixels = np.array(image)  # a copy of our own: torch takes it over
    low, high = float(np.min(pixels)), float(np.max(pixels))
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255):
        advice = (
            "scale it to 8 bits first (np.asarray(image) // 257 as uint8 for 16 bits)"
            if pixels.dtype.kind in "ui"
            else "pass np.asarray(image) scaled to floats in [0, 1] instead"
        )
        raise sample_error(
            f"sample {index} is a PIL image of mode {image.mode!r} with values in [{low:g}, {high:g}], outside "
            f"the 0-255 scale of Pillow, whose conversion to RGB would clip them: {advice}."
        )
    if pixels.dtype.kind == "f" and 0 < high <= _DARKEST_FLOAT_IMAGE:
        raise sample_error(
            f"sample {index} is a PIL image of mode {image.mode!r} with values in [{low:g}, {high:g}]: Pillow's "
            "float images are on a 0-255 scale, so these would read as black. Values on the [0, 1] scale "
            "(overshooting it a little, after resampling say) go in as np.clip(np.asarray(image), 0, 1), a "
            "float array; a truly dark image on the 0-255 scale as np.asarray(image).round().astype(np.uint8)."
        )
    return pixels / np.float32(255) if pixels.dtype.kind == "f" else pixels
