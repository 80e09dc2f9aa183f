"""Preprocessing callables of every kind, importable by a second process to compare their cache keys."""

import threading


def to_unit(image):
    """A module-level function: pixels to [0, 1]."""
    return image.float() / 255


inverted = lambda image: 1 - image.float() / 255  # noqa: E731 (the lambda is the point)


def scaled(factor):
    """A closure: pixels to [0, factor]."""

    def scale(image):
        return image.float() * (factor / 255)

    return scale


def locked():
    """A closure over a lock, which cannot be pickled, so not hashed by value either."""
    lock = threading.Lock()

    def scale(image):
        with lock:
            return image.float() / 255

    return scale
