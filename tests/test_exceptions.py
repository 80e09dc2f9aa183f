import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import sktransfer
import sktransfer.exceptions


def _raised_classes():
    """Every warning and exception class that a module of sktransfer defines, but private ones: those end a
    pass inside the library and never reach the user (text_encoders._ReachedTheLayer)."""
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
                and not name.startswith("_")
            ):
                classes[name] = value
    return classes


def test_every_warning_and_error_is_importable_from_sktransfer_exceptions():
    classes = _raised_classes()
    assert {"SettingsChangedWarning", "SlowPrecisionWarning", "NetworkOutputError"} <= set(classes)
    assert sorted(classes) == sktransfer.exceptions.__all__
    for name, cls in classes.items():
        assert getattr(sktransfer.exceptions, name) is cls  # the class raised, not a copy


def test_every_warning_has_a_class_of_the_library_or_of_scikit_learn():
    """So that a notebook can silence one warning it has read without silencing the others."""
    generic = {"Warning", "UserWarning", "RuntimeWarning"}
    unclassed = []
    for path in sorted(Path(sktransfer.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn"):
                continue
            category = node.args[1] if len(node.args) > 1 else None
            category = next((kw.value for kw in node.keywords if kw.arg == "category"), category)
            if category is None or ast.unparse(category) in generic:
                unclassed.append(f"{path.name}:{node.lineno}")
    assert not unclassed
