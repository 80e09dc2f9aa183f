import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from sktransfer import _pixel_values
from sktransfer._image_batches import PreprocessedImages, batch_loader
from sktransfer.exceptions import AmbiguousLayoutWarning, GrayscaleStripsWarning
from sktransfer.images import as_image_source, is_vector_input


def _loaded(X):
    source = as_image_source(X)
    return torch.stack([source.load(i) for i in range(len(source))])


def test_layouts_give_the_same_images(rgb_images):
    expected = torch.from_numpy(rgb_images).permute(0, 3, 1, 2)
    assert torch.equal(_loaded(rgb_images), expected)
    assert torch.equal(_loaded(np.moveaxis(rgb_images, -1, 1)), expected)  # N×C×H×W numpy
    assert torch.equal(_loaded(torch.from_numpy(rgb_images).permute(0, 3, 1, 2)), expected)
    assert torch.equal(_loaded(list(rgb_images)), expected)
    assert torch.equal(_loaded([Image.fromarray(image) for image in rgb_images]), expected)
    assert torch.equal(_loaded(rgb_images.astype(np.int64)), expected)
    rgba = np.concatenate([rgb_images, np.full((*rgb_images.shape[:3], 1), 7, np.uint8)], axis=3)
    assert torch.equal(_loaded(rgba), expected)


def test_grayscale_is_replicated_to_three_channels(rgb_images):
    gray = rgb_images[..., 0]
    loaded = _loaded(gray)
    assert loaded.shape == (6, 3, 20, 20)
    assert torch.equal(loaded[:, 0], loaded[:, 2])
    assert torch.equal(loaded[:, 1], torch.from_numpy(gray))


def test_one_colour_image_without_its_batch_axis_warns(rgb_images):
    with pytest.warns(GrayscaleStripsWarning, match=r"read as 20 grayscale images of 20×3 pixels.*X\[None\]"):
        assert len(as_image_source(rgb_images[0])) == 20
    one_tensor = torch.from_numpy(rgb_images[0]).permute(2, 0, 1)  # C×H×W, as torchvision's read_image gives
    with pytest.warns(GrayscaleStripsWarning, match=r"read as 3 grayscale images of 20×20 pixels.*N×C×H×W"):
        assert len(as_image_source(one_tensor)) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", GrayscaleStripsWarning)
        as_image_source(rgb_images[..., 0])  # grayscale images: N×H×W
        as_image_source(rgb_images[0][None])
        as_image_source(one_tensor[None])
        as_image_source(rgb_images[:3, ..., 0])  # three grayscale images in a NumPy array


def test_a_pil_image_closed_before_its_pixels_loaded_is_named(tmp_path, rgb_images):
    # Pillow's bare AssertionError named neither the sample nor the with block that closed its file.
    path = tmp_path / "image.png"
    Image.fromarray(rgb_images[0]).save(path)
    with Image.open(path) as image:
        closed = [image]
    closed_by_call = Image.open(path)
    closed_by_call.close()  # Pillow says "Operation on closed image", a ValueError
    for source in (
        as_image_source(closed),
        as_image_source([Image.open(path), *closed]),
        as_image_source([Image.open(path), closed_by_call]),
    ):
        index = len(source) - 1
        with pytest.raises(ValueError, match=rf"sample {index} is a PIL image whose pixels .*image.load\(\)"):
            source.load(index)
        with pytest.raises(ValueError, match=rf"sample {index} is a PIL image"):
            source.fingerprints()


def test_a_pil_image_of_a_truncated_file_is_not_called_closed(tmp_path, rgb_images):
    # Every OSError got the advice for a file closed by a with block, though this one is open and cut short.
    path = tmp_path / "image.png"
    Image.fromarray(rgb_images[0]).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    source = as_image_source([Image.open(path)])
    with pytest.raises(ValueError, match=r"sample 0 is a PIL image .*cut short or damaged") as caught:
        source.load(0)
    assert "with block" not in str(caught.value)


def test_a_pil_mode_without_rgb_conversion_is_named_with_advice_for_its_mode():
    source = as_image_source([Image.new("RGB", (4, 4)), Image.new("La", (4, 4))])
    with pytest.raises(ValueError, match=r"sample 1 is a PIL image .*La to L.* Convert it first") as caught:
        source.load(1)
    assert "with block" not in str(caught.value)  # the advice for a closed file does not apply


def test_a_preprocess_that_writes_in_place_works_on_grayscale_images(rgb_images):
    # Grayscale images reach preprocess as three views of one channel, which an in-place op cannot write.
    normalize = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3, inplace=True)]
    )
    gray = rgb_images[..., 0].copy()
    batch = PreprocessedImages(as_image_source(gray.astype(np.float32) / 255), normalize)[0]
    expected = torch.from_numpy(gray[0]).float() / 255 * 2 - 1
    torch.testing.assert_close(batch, expected.expand(3, -1, -1))


def test_a_preprocess_that_returns_no_tensor_is_named(rgb_images):
    dataset = PreprocessedImages(as_image_source(rgb_images), lambda image: image.numpy())
    with pytest.raises(
        ValueError, match=r"preprocessing returned a ndarray for sample 0; it must return a torch"
    ):
        dataset.__getitems__([0, 1])


def test_an_augment_that_writes_in_place_works_on_grayscale_images(rgb_images):
    gray = rgb_images[..., 0].copy()
    erase = v2.RandomErasing(p=1.0, value=0, inplace=True)
    augmented = PreprocessedImages(as_image_source(gray), None, augment=erase)[0]
    assert augmented.shape == (3, 20, 20)
    assert int((augmented == 0).sum()) > int((torch.from_numpy(gray[0]) == 0).sum()) * 3  # erased
    np.testing.assert_array_equal(gray, rgb_images[..., 0])  # the user's images are left alone


def test_float_images_are_read_in_zero_one(rgb_images):
    unit = _loaded(rgb_images.astype(np.float32) / 255)
    assert unit.dtype == torch.float32
    torch.testing.assert_close(unit * 255, _loaded(rgb_images).float())
    half = _loaded(torch.from_numpy(rgb_images).permute(0, 3, 1, 2).to(torch.bfloat16) / 255)
    torch.testing.assert_close(half, unit, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match=r"sample 0 has values in \[.*\]; float images must lie in \[0, 1\]"):
        as_image_source(rgb_images.astype(np.float64))


def test_a_list_mixing_integer_and_float_images_reads_each_on_its_own_scale(rgb_images):
    # Any float image in the list held every image to [0, 1], and the error blamed a uint8 image.
    unit = rgb_images[1].astype(np.float32) / 255
    source = as_image_source([rgb_images[0], unit])
    assert torch.equal(source.load(0), _loaded(rgb_images[:1])[0])  # uint8, as it came
    torch.testing.assert_close(source.load(1) * 255, _loaded(rgb_images[1:2])[0].float())
    with pytest.raises(ValueError, match=r"sample 1 has values .*; float images must lie in \[0, 1\]"):
        as_image_source([rgb_images[0], unit * 2])
    with pytest.raises(ValueError, match=r"sample 1 has values .*; integer images must lie in \[0, 255\]"):
        as_image_source([unit, rgb_images[1].astype(np.int32) * 2])


def test_wide_pil_modes_are_read_as_their_values_not_clipped(tmp_path, rgb_images):
    # Pillow's convert("RGB") clips 16-bit and float values at 255: a 16-bit image and its negative, or a
    # float image in [0, 1], all read as white or black.
    gray = rgb_images[..., 0]
    sixteen = [Image.fromarray(image.astype(np.uint16)) for image in gray]  # mode I;16, within [0, 255]
    assert sixteen[0].mode == "I;16"
    assert torch.equal(_loaded(sixteen), _loaded(gray))
    floats = [Image.fromarray(image).convert("F") for image in gray]  # Pillow's float mode: a 0-255 scale
    torch.testing.assert_close(_loaded(floats), _loaded(gray.astype(np.float32) / 255))
    keys = as_image_source([Image.fromarray(image.astype(np.float32) / 255) for image in gray]).fingerprints()
    assert len(set(keys)) == len(gray)  # not one key for every float image that the RGB conversion blackens
    with pytest.raises(ValueError, match=r"sample 0 is a PIL image of mode 'F' with values in \[0, 1\]"):
        _loaded([Image.fromarray(gray[0].astype(np.float32) / gray[0].max())])  # would read as black
    overshooting = gray[0].astype(np.float32) / gray[0].max()
    overshooting[0, 0] = 1.05  # [0, 1] after a resampling that overshoots: read on 0-255, it was near black
    with pytest.raises(ValueError, match=r"sample 0 is a PIL image of mode 'F' with values in \[0, 1.05\]"):
        _loaded([Image.fromarray(overshooting)])
    wide = np.linspace(0, 65535, 400).reshape(20, 20).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    with pytest.raises(
        ValueError, match=r"sample 1 is a PIL image of mode 'I;16' with values in \[0, 65535\]"
    ):
        _loaded([Image.fromarray(gray[0].astype(np.uint16)), Image.fromarray(wide)])
    with pytest.raises(ValueError, match=r"sample 0 .* would clip them: scale it to 8 bits.*wide\.png"):
        _loaded([str(tmp_path / "wide.png")])


def test_files_series_and_dataframe(tmp_path, rgb_images):
    paths = []
    for index, image in enumerate(rgb_images):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(image).save(paths[-1])
    expected = torch.from_numpy(rgb_images).permute(0, 3, 1, 2)
    assert torch.equal(_loaded(paths), expected)
    assert torch.equal(_loaded(pd.Series(paths)), expected)
    assert torch.equal(_loaded(pd.DataFrame({"path": paths})), expected)
    assert torch.equal(_loaded(np.array(paths, dtype=object)), expected)
    assert torch.equal(_loaded(np.array(paths)[:, None]), expected)  # a column, as ColumnTransformer gives
    assert not is_vector_input(pd.DataFrame({"path": paths})[["path"]].to_numpy())


def test_photos_are_turned_as_their_exif_orientation_says(tmp_path, rgb_images):
    stored = rgb_images[0][:, :5]  # 5 wide, as the camera stored it
    shown = np.rot90(stored, k=-1)  # orientation 6: viewers turn it a quarter clockwise
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "portrait.png", exif=exif)  # PNG keeps the pixels exactly, and the EXIF
    expected = torch.from_numpy(np.ascontiguousarray(shown)).permute(2, 0, 1)
    from_file = _loaded([str(tmp_path / "portrait.png")])[0]
    assert torch.equal(from_file, expected)
    with Image.open(tmp_path / "portrait.png") as opened:
        opened.load()
        assert torch.equal(_loaded([opened])[0], from_file)
        assert opened.size == (5, len(stored))  # the user's image is not turned in place
        already_turned = as_image_source([ImageOps.exif_transpose(opened)])
        assert already_turned.fingerprints() == as_image_source([opened]).fingerprints()


def test_images_of_different_sizes_need_a_resizing_preprocess():
    images = [np.zeros((10, 12, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)]
    dataset = PreprocessedImages(as_image_source(images), preprocess=None)
    with pytest.raises(ValueError, match=r"sample 0 has shape \(3, 10, 12\) but sample 1 has shape"):
        dataset.__getitems__([0, 1])

    def resize(image):
        return torch.nn.functional.interpolate(image[None].float(), size=(6, 6))[0]

    resized = PreprocessedImages(as_image_source(images), preprocess=resize)
    assert next(iter(batch_loader(resized, batch_size=2))).shape == (2, 3, 6, 6)


def test_nothing_the_user_passed_is_modified(rgb_images):
    floats = rgb_images.astype(np.float32) / 255
    floats.setflags(write=False)
    before = floats.copy()
    dataset = PreprocessedImages(as_image_source(floats), preprocess=lambda batch: batch.mul_(2))
    next(iter(batch_loader(dataset, batch_size=4)))
    np.testing.assert_array_equal(floats, before)
    assert not floats.flags.writeable


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((0, 8, 8, 3), np.uint8), "X is empty"),
        ([], "X is empty"),
        (np.zeros((2, 3, 4, 5, 6)), r"X has shape \(2, 3, 4, 5, 6\)"),
        (np.zeros((2, 8, 8, 5)), "no axis holds 1, 3 or 4 colour channels"),
        (np.array([1.0, 2.0]), r"X has shape \(2,\)"),
        (np.zeros((2, 5, 5, 3), bool), "dtype"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 3), np.uint8)], "sample 1 has shape .*one pixel"),
        ([np.zeros((8, 8), np.float32), np.zeros((8, 0), np.float32)], "sample 1 has shape .*one pixel"),
        # one image's own shape, not the batch of one it was read as
        ([np.zeros((8, 8, 5), np.uint8)], r"sample 0 has shape \(8, 8, 5\): no axis .*expected H×W×C"),
        ([np.zeros((8, 8, 3)).tolist(), [[0, 0], [0]]], "sample 1 is nested lists of uneven lengths"),
    ],
)
def test_malformed_arrays_are_rejected(X, message):
    with pytest.raises(ValueError, match=message):
        as_image_source(X)


def test_images_as_nested_lists_may_differ_in_size(rgb_images):
    # numpy's own error ("an inhomogeneous shape") came out, where a list of arrays of two sizes is read
    small = rgb_images[0, :4, :4]
    nested = as_image_source([rgb_images[0].tolist(), small.tolist()])
    arrays = as_image_source([rgb_images[0], small])
    for index in range(2):
        np.testing.assert_array_equal(np.asarray(nested.load(index)), np.asarray(arrays.load(index)))


def test_bad_values_name_the_sample(rgb_images):
    floats = rgb_images.astype(np.float32) / 255
    floats[4, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="sample 4 contains NaN or infinity"):
        as_image_source(floats)
    floats[4, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="sample 4 contains NaN"):
        as_image_source(floats)
    integers = rgb_images.astype(np.int32)
    integers[2, 1, 1, 1] = -3
    with pytest.raises(
        ValueError, match=r"sample 2 has values in \[-3, .*\]; integer images must lie in \[0, 255\]"
    ):
        as_image_source(integers)
    integers[2, 1, 1, 1] = 300
    with pytest.raises(ValueError, match="sample 2 has values in"):
        as_image_source(integers)
    with pytest.raises(ValueError, match="sample 1 has values"):
        as_image_source([np.zeros((4, 4)), np.full((4, 4), 1.5)])


def test_bad_files_name_the_path(tmp_path, rgb_images):
    good = tmp_path / "good.png"
    Image.fromarray(rgb_images[0]).save(good)
    with pytest.raises(FileNotFoundError, match=r"sample 1: image file .*missing\.png"):
        as_image_source([str(good), str(tmp_path / "missing.png")])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"sample 1, file .*corrupt\.jpg.*not a readable image"):
        as_image_source([good, corrupt])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    source = as_image_source([good, truncated])
    with pytest.raises(ValueError, match=r"sample 1, file .*truncated\.png.*could not be decoded"):
        source.load(1)
    with pytest.raises(ValueError, match="sample 1 is a int, but sample 0 is a file path"):
        as_image_source([str(good), 3])
    with pytest.raises(ValueError, match="2 columns"):
        as_image_source(pd.DataFrame({"a": [str(good)], "b": [str(good)]}))


def test_vector_input_is_recognised(rgb_images):
    assert is_vector_input(np.zeros((3, 4)))
    assert is_vector_input(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert not is_vector_input(pd.DataFrame({"path": ["a.png"]}))
    assert not is_vector_input(rgb_images)
    assert not is_vector_input(["a.png", "b.png"])


def _changed_keys(before, after):
    return [index for index, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]


def test_fingerprints_follow_each_images_content(tmp_path, rgb_images):
    keys = as_image_source(rgb_images).fingerprints()
    assert len(set(keys)) == len(rgb_images)
    assert as_image_source(rgb_images.copy()).fingerprints() == keys
    assert as_image_source(list(rgb_images)).fingerprints() == keys
    changed = rgb_images.copy()
    changed[2, 0, 0, 0] ^= 1
    assert _changed_keys(keys, as_image_source(changed).fingerprints()) == [2]
    pil_keys = as_image_source([Image.fromarray(image) for image in rgb_images]).fingerprints()
    pil_changed = as_image_source([Image.fromarray(image) for image in changed]).fingerprints()
    assert len(set(pil_keys)) == len(rgb_images)
    assert _changed_keys(pil_keys, pil_changed) == [2]


def test_file_fingerprints_follow_the_bytes_not_the_path(tmp_path, rgb_images):
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        Image.fromarray(rgb_images[0]).save(path)
    first, copy = as_image_source([str(path) for path in paths]).fingerprints()
    assert first == copy
    Image.fromarray(rgb_images[1]).save(paths[1])
    assert as_image_source([str(paths[1])]).fingerprints() != [copy]


def test_validating_and_hashing_an_array_copies_no_batch_of_images():
    X = np.random.default_rng(0).random((64, 64, 64, 3), dtype=np.float32)  # channels last, 3.1 MB
    tracemalloc.start()
    try:
        as_image_source(X).fingerprints()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 20


def test_bad_values_are_found_in_any_memory_layout(monkeypatch, rgb_images):
    monkeypatch.setattr(_pixel_values, "_RANGE_CHUNK_BYTES", 2 * rgb_images[0].nbytes * 4)  # two float images
    floats = rgb_images.astype(np.float32) / 255
    floats[4, 2, 2, 0] = -np.inf
    for X in (floats, floats[:, ::2], floats.transpose(0, 3, 1, 2), np.asfortranarray(floats), list(floats)):
        with pytest.raises(ValueError, match="sample 4 contains NaN or infinity"):
            as_image_source(X)
    floats[4, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="sample 4 contains NaN or infinity"):
        as_image_source(floats[:, ::2])
    floats[4, 2, 2, 0] = 0.5
    floats[5, 2, 2, 1] = 1.5
    with pytest.raises(ValueError, match=r"sample 5 has values in \[.*, 1.5\]; float images"):
        as_image_source(floats[:, ::2])
    assert len(as_image_source(floats[:5, ::-2])) == 5


def test_a_single_pil_image_is_refused_with_advice_that_works():
    """As an array it is H rows of W pixels, which were read as grayscale strips (and X[None] fails on it)."""
    image = Image.new("RGB", (8, 16))
    with pytest.raises(ValueError, match=r"X is a single PIL image \(RGB, 8×16\); pass a list: \[image\]"):
        as_image_source(image)
    assert len(as_image_source([image])) == 1


def test_big_endian_float_images_read_as_native_ones():
    native = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    big = native.astype(">f4")
    source, again = as_image_source(big), as_image_source(native)
    torch.testing.assert_close(source.load(0), again.load(0))


def test_nested_lists_of_pixels_are_images_not_feature_vectors():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    assert not is_vector_input(images.tolist())
    assert is_vector_input([[0.0, 1.0], [2.0, 3.0]])


def test_a_list_with_an_image_of_another_dtype_names_the_sample():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"X: sample 1 has dtype bool: images must be integers or floats"):
        as_image_source([image, image > 0])
    with pytest.raises(ValueError, match=r"X has dtype complex128: images must be integers or floats"):
        as_image_source(np.zeros((2, 8, 8, 3), dtype=complex))


def test_images_whose_layout_reads_either_way_warn_naming_the_layout_chosen():
    # A channels-first array 4 pixels wide was read channels-last (4 "channels", the last dropped as alpha).
    rng = np.random.default_rng(0)
    narrow = rng.integers(0, 256, size=(2, 3, 16, 4), dtype=np.uint8)
    with pytest.warns(AmbiguousLayoutWarning, match=r"X has shape \(2, 3, 16, 4\).*np.moveaxis\(X, 1, -1\)"):
        assert tuple(as_image_source(narrow).load(0).shape) == (3, 3, 16)  # read as N×H×W×C, as documented
    with pytest.warns(
        AmbiguousLayoutWarning, match=r"X: sample 1 has shape \(3, 8, 4\), which could be H×W×C"
    ):
        as_image_source([np.zeros((8, 8, 3), np.uint8), narrow[0, :, :8]])
    with pytest.warns(
        AmbiguousLayoutWarning, match=r"a tensor is read channels-first.*X.permute\(0, 3, 1, 2\)"
    ):
        as_image_source(torch.from_numpy(narrow))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_image_source(rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8))  # one reading only
    # one warning for a list of such images, not one per image
    with pytest.warns(AmbiguousLayoutWarning) as caught:
        as_image_source([np.zeros((4, 4, 3), np.uint8)] * 12)
    assert len(caught) == 1
    assert "12 samples (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...) have shapes like sample 0's (4, 4, 3)" in str(
        caught[0].message
    )
