from pathlib import Path

from PIL import Image

from sktransfer.datasets import load_image_folder


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
