"""Folders of labelled images: one sub-folder per class (ImageFolder layout), read and written."""

import functools
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from ._labels import label_array, refuse_missing_labels, unlabelled_mask
from ._stacklevel import caller_stacklevel


def _pillow_reads(suffixes):
    """Those of ``suffixes`` that name a format this Pillow opens (AVIF, say, only where it is built in)."""
    registered = Image.registered_extensions()  # every plugin registered (Image.init) first
    return tuple(
        suffix
        for suffix in suffixes
        if registered.get(suffix) in Image.OPEN
        and not _is_stub(Image.OPEN[registered[suffix]][0])  # HDF5 or GRIB: a handler of one's own needed
    )


def _is_stub(factory):
    return isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)


@functools.cache
def image_suffixes():
    """The suffixes of the image files that :func:`load_image_folder` reads.

    torchvision's ImageFolder suffixes (.ppm, .pgm among them), and other names of photos and pictures that
    this Pillow reads: .jfif is how browsers save downloaded JPEGs; AVIF, animated PNG, Targa, JPEG 2000, QOI.
    """
    return (
        *(".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
        *(".ppm", ".pgm", ".pbm", ".pnm"),
        *_pillow_reads((".avif", ".avifs", ".apng", ".tga", ".jp2", ".j2k", ".jpx", ".jpf", ".qoi")),
    )


@functools.cache
def _pillow_suffixes():
    """The suffixes of the pictures this Pillow opens: files with one that is no image suffix count as left
    out. Not videos and documents, whose suffixes Pillow registers too (it reads MPEG's header alone, and
    PostScript only through Ghostscript)."""
    registered = Image.registered_extensions()
    return frozenset(
        suffix for suffix in _pillow_reads(tuple(registered)) if registered[suffix] not in _NOT_PICTURES
    )


_NOT_PICTURES = frozenset({"MPEG", "EPS"})


class SkippedImageFilesWarning(UserWarning):
    """``load_image_folder`` left out files of formats Pillow reads, whose suffixes are not image suffixes
    there (icons, Photoshop files, PostScript, ...)."""


def load_image_folder(path):
    """Image file paths and their labels from a folder with one sub-folder per class (ImageFolder layout).

    Parameters
    ----------
    path : str or path-like
        The folder (``~`` is the home folder); files whose suffix is not an image suffix
        (:func:`image_suffixes`) are ignored, with a :class:`SkippedImageFilesWarning` for those of other
        formats Pillow reads (icons, say), and so are hidden files and folders (their names start with a
        dot, as ``.ipynb_checkpoints`` does). Links to folders are followed, each folder read once.

    Returns
    -------
    paths : list of str
    labels : ndarray of str

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for label in ("cat", "dog"):
    ...     (root / label).mkdir()
    ...     Image.new("RGB", (8, 8)).save(root / label / "0.png")
    >>> paths, labels = load_image_folder(root)
    >>> labels
    array(['cat', 'dog'], dtype='<U3')
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"path={str(root)!r} is not a folder.")
    classes, samples, skipped = _class_folder_samples(root)
    if skipped:
        listed = ", ".join(f"{suffix}: {count}" for suffix, count in skipped.most_common(5))
        warnings.warn(
            f"load_image_folder left out {skipped.total()} file{'s' * (skipped.total() > 1)} of formats Pillow "
            f"reads ({listed}), which are not among its image suffixes: convert them (to PNG, say), or pass "
            "their paths to the estimators yourself.",
            SkippedImageFilesWarning,
            stacklevel=caller_stacklevel(),
        )
    if not samples:
        raise ValueError(
            f"path={str(root)!r} holds no images in class sub-folders (expected {root}/<class>/<image>, "
            f"with suffixes {', '.join(image_suffixes())})."
        )
    return [file for file, _ in samples], np.array([classes[index] for _, index in samples])


def _class_folder_samples(root):
    """The class names under the folder ``root``, its (image file, class index) pairs, and the count by
    suffix of the files of other formats that Pillow reads, left out.

    Files come in torchvision's ``ImageFolder`` order, links to folders followed. Hidden entries are
    skipped: Jupyter's ``.ipynb_checkpoints`` holds copies of images opened in it, and macOS writes a
    ``._<name>`` file of metadata beside each image on a drive it does not own.
    """
    classes = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not _is_hidden(entry.name)
    )
    # Each folder is read once: through its own path where it lies in a class folder (a link to it is not
    # followed), else through the first link to it, so that no image comes twice, or under another class than
    # the one whose folder holds it (a link back to the root, a loop). A class folder without images is
    # skipped, as an empty folder holds no class.
    real = {_identity(root)}
    for name in classes:
        real |= _folders_within(root / name)
    entered = set()
    samples, skipped = [], Counter()
    for index, name in enumerate(classes):
        for file in _files_under(root / name, real, entered):
            if _is_hidden_below(root, file):
                continue
            suffix = os.path.splitext(file)[1].lower()
            if suffix in image_suffixes():
                samples.append((file, index))
            elif suffix in _pillow_suffixes():
                skipped[suffix] += 1
    return classes, samples, skipped


def _identity(folder):
    status = os.stat(folder)
    return status.st_dev, status.st_ino


def _folders_within(folder):
    """The identities of ``folder`` and of the visible folders under it, links to folders not followed."""
    found = set()
    for current, subfolders, _ in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not _is_hidden(name)]
        found.add(_identity(current))
    return found


def _files_under(folder, real, entered):
    """The files under ``folder`` (hidden folders left out), sorted as torchvision's ``make_dataset`` lists
    them. A link to a folder is followed unless it leads to one of ``real`` (read through its own path) or to
    one already ``entered`` through a link; each folder entered joins ``entered``."""
    found = []
    for current, subfolders, names in os.walk(folder, followlinks=True):
        entered.add(_identity(current))
        kept = []
        for subfolder in sorted(subfolders):
            path = os.path.join(current, subfolder)
            if _is_hidden(subfolder) or (os.path.islink(path) and _is_read_elsewhere(path, real, entered)):
                continue
            kept.append(subfolder)
        subfolders[:] = kept
        found.append((current, sorted(names)))
    return [os.path.join(current, name) for current, names in sorted(found) for name in names]


def _is_read_elsewhere(link, real, entered):
    identity = _identity(link)
    return identity in real or identity in entered


def _is_hidden(name):
    return name.startswith(".")


def _is_hidden_below(root, file):
    """Whether ``file`` or a folder between it and ``root`` is hidden."""
    return any(_is_hidden(part) for part in Path(file).relative_to(root).parts)


def save_image_folder(images, labels, path):
    """Write images as PNG files in the ImageFolder layout that :func:`load_image_folder` reads.

    Used to turn the bundled datasets into files, for the recipes that read image paths. Everything is
    checked before the first file is written: pixels that PNG cannot hold as they are (floats, integers
    outside 0 to 255) are refused rather than cast, and so are labels that are not one folder name, and a
    folder that holds images this call would not write (``load_image_folder`` would read them with the new
    ones). Saving the same images to the same folder again overwrites them.

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width, 3), uint8, or list of (height, width, 3) arrays
        Integers in [0, 255] of another dtype are accepted too. A list may hold images of different sizes,
        as a folder of photographs does.
    labels : array-like of shape (n_images,)
        One sub-folder per distinct label: each label, as a string, must be a folder name that
        :func:`load_image_folder` reads back (not empty, not starting with a dot, no path separator), and no
        two may differ only in case. Missing labels (NaN, None) and the mark of an unlabelled image (-1) are
        refused: a folder would make a class of them.
    path : str or path-like
        The folder (``~`` is the home folder); created if missing.

    Returns
    -------
    paths : list of str
        The file of each image, in the order of ``images``.

    Examples
    --------
    >>> import tempfile
    >>> from sktransfer.datasets import load_textures
    >>> images, labels = load_textures(n_per_class=2, patch_size=16)
    >>> paths = save_image_folder(images, labels, tempfile.mkdtemp())
    >>> load_image_folder(Path(paths[0]).parents[1])[1].tolist() == sorted(labels.tolist())
    True
    """
    root = Path(path).expanduser()
    images = _savable_pixels(images)
    labels = label_array(labels)  # a list that mixes names with -1 or NaN keeps them apart, to be refused
    names = [str(label) for label in labels.tolist()]
    if len(names) != len(images):
        raise ValueError(f"images holds {len(images)} images but labels has {len(names)} labels.")
    refuse_missing_labels(labels, name="labels")
    unlabelled = np.flatnonzero(unlabelled_mask(labels))
    if unlabelled.size:
        raise ValueError(
            f"labels is -1, the mark of an unlabelled image, at samples {unlabelled[:10].tolist()}: saved, "
            "they would be read back as a class named '-1'. Save the labelled images only "
            "(images[labels != -1]), or the unlabelled ones to a folder of their own under one name."
        )
    unsafe = sorted({name for name in names if not _is_folder_name(name)})
    if unsafe:
        raise ValueError(
            f"labels {unsafe[:5]} are not folder names: each label becomes one sub-folder of path, so it "
            "must not be empty, start with a dot (load_image_folder skips hidden folders), nor hold a path "
            "separator."
        )
    _refuse_labels_alike_but_for_case(names)
    files = [root / name / f"{index:06d}.png" for index, name in enumerate(names)]
    stale = sorted(set(_images_in_class_folders(root)) - set(map(str, files)))
    if stale:
        raise FileExistsError(
            f"path={str(root)!r} already holds {len(stale)} images that this call would not write (such as "
            f"{stale[0]!r}): load_image_folder would read them with these. Save to an empty folder, or "
            "delete them first."
        )
    for image, file in zip(images, files, strict=True):
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(file)
    return [str(file) for file in files]


def _savable_pixels(images):
    """``images`` as uint8, refused when that would change a pixel: one array, or a list of any sizes."""
    if not isinstance(images, list | tuple):
        return _uint8_pixels(np.asarray(images), "images", ndim=4)
    if not images:
        raise ValueError("images is empty: there is nothing to save.")
    return [_uint8_pixels(np.asarray(image), f"images[{i}]", ndim=3) for i, image in enumerate(images)]


def _uint8_pixels(array, name, ndim):
    """``array``, an image (``ndim=3``) or images (4) with RGB channels last, as uint8; ``name`` in errors."""
    if array.ndim != ndim or array.shape[-1] != 3:
        shape = "(n_images, height, width, 3)" if ndim == 4 else "(height, width, 3)"
        raise ValueError(f"{name} must have the shape {shape}, RGB channels last; got {array.shape}.")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        found = f"{array.dtype} values" + (f" from {array.min()} to {array.max()}" if array.size else "")
        raise ValueError(
            f"{name} must hold integers from 0 to 255 (uint8); got {found}. For floats in [0, 1], pass "
            "(images * 255).round().astype(np.uint8)."
        )
    return array.astype(np.uint8)


def _is_folder_name(name):
    """Whether ``name`` is one visible folder name on any system: not empty or hidden, no separator."""
    return name != "" and not _is_hidden(name) and "/" not in name and "\\" not in name


def _refuse_labels_alike_but_for_case(names):
    """Refuse labels that differ only in case: one folder on macOS's and Windows' file systems."""
    by_folded = {}
    for name in dict.fromkeys(names):
        by_folded.setdefault(name.casefold(), []).append(name)
    alike = [group for group in by_folded.values() if len(group) > 1]
    if alike:
        raise ValueError(
            f"labels {alike[0]} differ only in case: on macOS and Windows, whose file systems ignore case, "
            "they would share one sub-folder, and load_image_folder would read them as one class. Rename "
            "them (with a suffix, say) before saving."
        )


def _images_in_class_folders(root):
    """The image files that :func:`load_image_folder` would read under ``root``."""
    if not root.is_dir():
        return []
    return [file for file, _ in _class_folder_samples(root)[1]]
