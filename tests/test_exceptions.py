import importlib
import inspect
import pkgutil

import sktransfer
import sktransfer.exceptions


def _raised_classes():
    """Every warning and exception class that a module of sktransfer defines."""
    classes = {}
    for info in pkgutil.walk_packages(sktransfer.__path__, "sktransfer."):
        if info.name == "sktransfer.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, Warning | Exception)
                and value.__module__ == info.name
            ):
                classes[name] = value
    return classes


def test_every_warning_and_error_is_importable_from_sktransfer_exceptions():
    classes = _raised_classes()
    assert {"SettingsChangedWarning", "SlowPrecisionWarning", "NetworkOutputError"} <= set(classes)
    assert sorted(classes) == sktransfer.exceptions.__all__
    for name, cls in classes.items():
        assert getattr(sktransfer.exceptions, name) is cls  # the class raised, not a copy
