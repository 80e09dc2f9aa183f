from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sktransfer.datasets import blend_on_photos, load_image_folder, load_sample_photo


def test_load_image_folder_reads_class_folders_recursively(tmp_path):
    for relative in ("cat/1.png", "cat/nested/2.JPG", "dog/3.gif", "dog/4.bmp"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / relative)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()  # a class folder without images is skipped
    (tmp_path / "stray.png").write_bytes(b"")  # files at the top are in no class
    paths, labels = load_image_folder(tmp_path)
    assert [Path(path).relative_to(tmp_path).as_posix() for path in paths] == [
        "cat/1.png",
        "cat/nested/2.JPG",
        "dog/3.gif",
        "dog/4.bmp",
    ]
    assert labels.tolist() == ["cat", "cat", "dog", "dog"]


def _cut_from(photo, patch):
    """Whether ``patch`` is a crop of ``photo``."""
    rows = np.lib.stride_tricks.sliding_window_view(photo, patch[:1].shape)[:, :, 0, 0]  # (top, left, w, 3)
    for top, left in zip(*np.nonzero((rows == patch[0]).all(axis=(2, 3))), strict=True):
        if np.array_equal(photo[top : top + len(patch), left : left + patch.shape[1]], patch):
            return True
    return False


def test_digits_blended_on_photos_show_the_photo_behind_and_its_inverse_in_the_strokes():
    digits = np.zeros((3, 28, 28, 3), dtype=np.uint8)
    digits[:, 8:20, 12:16] = 255
    blended = blend_on_photos(digits, photos=("chelsea",), random_state=1)
    assert blended.shape == digits.shape
    assert blended.dtype == np.uint8
    np.testing.assert_array_equal(blended, blend_on_photos(digits, photos=("chelsea",), random_state=1))
    photo = load_sample_photo("chelsea")
    patches = np.where(digits == 255, 255 - blended, blended)  # |patch - digit| undone
    assert all(_cut_from(photo, patch) for patch in patches)
    assert len({patch.tobytes() for patch in patches}) == 3  # each digit on a patch of its own
    with pytest.raises(ValueError, match="uint8 RGB images"):
        blend_on_photos(digits[..., 0])
