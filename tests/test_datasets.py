from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sktransfer.datasets import (
    blend_on_photos,
    load_digit_images,
    load_image_folder,
    load_rendered_digits,
    load_sample_photo,
    load_textures,
    save_image_folder,
)
from sktransfer.exceptions import SkippedImageFilesWarning


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


def test_load_image_folder_reads_every_suffix_of_torchvisions_image_folder_and_jfif(tmp_path):
    # .ppm and .pgm (ImageFolder reads them) and .jfif (a browser's downloaded JPEG) were skipped in silence.
    formats = {"a.ppm": "PPM", "b.pgm": "PPM", "c.jfif": "JPEG", "d.jpe": "JPEG", "e.pnm": "PPM"}
    (tmp_path / "cat").mkdir()
    for name, image_format in formats.items():
        Image.new("L" if name.endswith(".pgm") else "RGB", (4, 4)).save(tmp_path / "cat" / name, image_format)
    paths, labels = load_image_folder(tmp_path)
    assert sorted(Path(path).name for path in paths) == sorted(formats)
    assert labels.tolist() == ["cat"] * len(formats)


def test_load_image_folder_reads_each_folder_once_through_links(tmp_path):
    # torchvision's make_dataset followed links without noticing where it had been: a link back to the root
    # or to its own folder gave 902 samples for 2 images, cat images among them labelled "dog".
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / label / "x.png")
    (tmp_path / "cat" / "latest").symlink_to(tmp_path / "cat")
    (tmp_path / "dog" / "up").symlink_to(tmp_path)
    (tmp_path / "dog" / "more").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "dog" / "more" / "y.png")
    (tmp_path / "dog" / "again").symlink_to(tmp_path / "dog" / "more")  # one folder reached twice: read once
    (tmp_path / "cat" / "theirs").symlink_to(tmp_path / "dog" / "more")  # a dog folder stays the dogs'
    (tmp_path / "cat" / ".latest").symlink_to(tmp_path / "dog" / "more")  # hidden: never followed
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "z.png")
    (tmp_path / "cat" / "external").symlink_to(outside)  # a folder outside the classes: read through its link
    (tmp_path / "dog" / "external").symlink_to(outside)  # once, in the first class that links it
    paths, labels = load_image_folder(tmp_path)
    assert [Path(path).relative_to(tmp_path).as_posix() for path in paths] == [
        "cat/x.png",
        "cat/external/z.png",
        "dog/x.png",
        "dog/more/y.png",
    ]
    assert labels.tolist() == ["cat", "cat", "dog", "dog"]


def test_load_image_folder_reads_more_picture_formats_and_names_those_it_leaves_out(tmp_path):
    # .tga, .jp2, .qoi (and .avif where Pillow reads it) were left out in silence; formats Pillow reads that
    # are no picture suffix (an icon, a Photoshop file) are counted in a warning.
    (tmp_path / "cat").mkdir()
    for name, image_format in {"a.tga": "TGA", "b.jp2": "JPEG2000", "c.png": "PNG", "d.ico": "ICO"}.items():
        Image.new("RGB", (16, 16)).save(tmp_path / "cat" / name, image_format)
    (tmp_path / "cat" / "clip.mpg").write_bytes(b"")  # a video beside them: left out, as no picture
    with pytest.warns(SkippedImageFilesWarning, match=r"left out 1 file of formats Pillow reads \(.ico: 1\)"):
        paths, _ = load_image_folder(tmp_path)
    assert sorted(Path(path).name for path in paths) == ["a.tga", "b.jp2", "c.png"]


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
    np.testing.assert_array_equal(blend_on_photos(digits, photos="chelsea", random_state=1), blended)
    gray = blend_on_photos(digits, photos=("camera",))  # a grayscale photograph: gray patches, whole
    assert (gray[..., 0] == gray[..., 2]).all()
    assert gray.std() > 0
    for photos in ((), ("chelsea", "no_such_photo")):
        with pytest.raises(ValueError, match=r"photos=.*(none given|\['no_such_photo'\] name no image)"):
            blend_on_photos(digits, photos=photos)


def test_save_image_folder_checks_everything_before_writing(tmp_path):
    dark = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    refused = [
        (np.random.default_rng(0).random((2, 4, 4, 3)), ["a", "b"], r"integers from 0 to 255.*float64"),
        (np.full((1, 2, 2, 3), 300), ["a"], r"int64 values from 300 to 300"),
        (dark, ["a", "b", "c"], "2 images but labels has 3"),
        (dark, ["..", ""], r"labels \['', '..'\] are not folder names"),
        (dark, ["cat/dog", "x"], r"labels \['cat/dog'\]"),
        (dark, ["Cat", "cat"], r"labels \['Cat', 'cat'\] differ only in case"),  # one folder on macOS
        (dark[..., 0], ["a", "b"], r"\(n_images, height, width, 3\)"),
    ]
    for images, labels, message in refused:
        with pytest.raises(ValueError, match=message):
            save_image_folder(images, labels, tmp_path / "out")
        assert not (tmp_path / "out").exists()  # nothing written
    wide = np.full((1, 2, 2, 3), 200, dtype=np.int64)  # integers PNG holds as they are
    (path,) = save_image_folder(wide, ["a"], tmp_path / "wide")
    assert np.asarray(Image.open(path)).max() == 200


def test_save_image_folder_takes_a_list_of_images_of_different_sizes(tmp_path):
    # A list of images of other sizes raised numpy's "inhomogeneous shape" error.
    images = [np.full((4, 6, 3), 10, dtype=np.uint8), np.full((5, 3, 3), 20, dtype=np.int64)]
    paths = save_image_folder(images, ["a", "b"], tmp_path / "out")
    assert [np.asarray(Image.open(path)).shape for path in paths] == [(4, 6, 3), (5, 3, 3)]
    assert np.asarray(Image.open(paths[1])).max() == 20
    refused = [
        ([images[0], np.zeros((4, 4))], r"images\[1\] must have the shape \(height, width, 3\)"),
        ([images[0], np.full((2, 2, 3), 0.5)], r"images\[1\] must hold integers from 0 to 255.*float64"),
        ([], "images is empty"),
    ]
    for listed, message in refused:
        with pytest.raises(ValueError, match=message):
            save_image_folder(listed, ["a", "b"][: len(listed)], tmp_path / "refused")
        assert not (tmp_path / "refused").exists()


def test_save_image_folder_refuses_a_folder_holding_other_images_and_overwrites_its_own(tmp_path):
    images = np.zeros((4, 4, 4, 3), dtype=np.uint8)
    first = save_image_folder(images, ["a", "a", "b", "b"], tmp_path)
    assert save_image_folder(images, ["a", "a", "b", "b"], tmp_path) == first  # the same again: overwritten
    with pytest.raises(FileExistsError, match=r"already holds 4 images that this call would not write"):
        save_image_folder(images[:2], ["c", "c"], tmp_path)
    assert load_image_folder(tmp_path)[1].tolist() == ["a", "a", "b", "b"]


def test_patches_larger_than_a_photograph_are_refused_naming_the_size():
    for seed in range(3):  # whatever the draw: not only where a patch happens to fall off the photograph
        with pytest.raises(ValueError, match=r"images are 600×600, larger than the photograph"):
            blend_on_photos(np.zeros((1, 600, 600, 3), dtype=np.uint8), random_state=seed)
    with pytest.raises(ValueError, match="patch_size is 1000×1000"):
        load_textures(patch_size=1000)
    with pytest.raises(ValueError, match="n_per_class=0 must be an integer of at least 1"):
        load_textures(n_per_class=0)


@pytest.mark.parametrize(
    ("load", "name"),
    [
        (load_textures, "n_per_class"),
        (load_textures, "patch_size"),  # 0 gave 200 empty images
        (load_digit_images, "size"),
        (load_rendered_digits, "n_per_class"),
        (load_rendered_digits, "size"),
    ],
)
@pytest.mark.parametrize("value", [0, 2.5, True])
def test_counts_and_sizes_must_be_positive_integers(load, name, value):
    with pytest.raises(ValueError, match=rf"{name}={value!r} must be an integer of at least 1\."):
        load(**{name: value})


def test_load_image_folder_skips_hidden_folders_and_files(tmp_path):
    # Jupyter's checkpoints of an opened image and macOS's "._" metadata files were read as a class, or as
    # images that fail to open.
    for relative in ("cat/1.png", "cat/.ipynb_checkpoints/1-checkpoint.png", ".ipynb_checkpoints/2.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / relative)
    (tmp_path / "cat" / "._1.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble metadata, not a PNG
    paths, labels = load_image_folder(tmp_path)
    assert [Path(path).relative_to(tmp_path).as_posix() for path in paths] == ["cat/1.png"]
    assert labels.tolist() == ["cat"]
    with pytest.raises(ValueError, match=r"labels \['.hidden'\] are not folder names.*start with a dot"):
        save_image_folder(np.zeros((1, 2, 2, 3), dtype=np.uint8), [".hidden"], tmp_path / "out")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array(["cat", None], dtype=object), r"labels holds missing labels .* at samples \[1\]"),
        (np.array([0.0, np.nan]), r"labels holds missing labels .* at samples \[1\]"),
        (np.array([3, -1]), r"labels is -1, the mark of an unlabelled image, at samples \[1\]"),
        (
            np.array(["cat", -1], dtype=object),
            r"labels is -1, the mark of an unlabelled image, at samples \[1\]",
        ),
        (["cat", -1], r"labels is -1, the mark of an unlabelled image, at samples \[1\]"),  # a plain list
        (["cat", np.nan], r"labels holds missing labels .* at samples \[1\]"),
    ],
)
def test_save_image_folder_refuses_missing_and_unlabelled_labels(tmp_path, labels, message):
    # They were written as folders "None", "nan" and "-1", read back as classes.
    with pytest.raises(ValueError, match=message):
        save_image_folder(np.zeros((2, 2, 2, 3), dtype=np.uint8), labels, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    save_image_folder(np.zeros((1, 2, 2, 3), dtype=np.uint8), ["-1"], tmp_path / "named")
    assert load_image_folder(tmp_path / "named")[1].tolist() == ["-1"]  # the string "-1" is a class name


def test_image_folders_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    (path,) = save_image_folder(np.zeros((1, 2, 2, 3), dtype=np.uint8), ["cat"], "~/images")
    assert Path(path) == tmp_path / "images" / "cat" / "000000.png"
    assert not Path("~").exists()  # no folder named "~" in the working directory
    assert load_image_folder("~/images")[0] == [path]


def test_a_sample_image_drawn_at_random_is_the_same_every_time():
    # binary_blobs drew new blobs at every call, whatever blend_on_photos' random_state.
    np.testing.assert_array_equal(load_sample_photo("binary_blobs"), load_sample_photo("binary_blobs"))
    digits = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        blend_on_photos(digits, photos=["binary_blobs"], random_state=0),
        blend_on_photos(digits, photos=["binary_blobs"], random_state=0),
    )


def test_load_sample_photo_gives_rgb_uint8_and_names_a_wrong_name():
    for name in ("chelsea", "camera", "horse", "logo"):  # colour, gray, black-and-white, RGBA
        photo = load_sample_photo(name)
        assert photo.shape == (*photo.shape[:2], 3), name
        assert photo.dtype == np.uint8, name
    assert set(np.unique(load_sample_photo("horse"))) == {0, 255}
    for name in ("chelsey", "download_all", "data_dir"):
        with pytest.raises(ValueError, match=rf"name='{name}' names no image of skimage.data.*'chelsea'"):
            load_sample_photo(name)
    with pytest.raises(ValueError, match=r"name='lfw_subset' gives \(200, 25, 25\) rather than one image"):
        load_sample_photo("lfw_subset")
