"""Progress bars in a Jupyter kernel (simulated here; tests/test_notebook.py runs a real one) and in workers."""

import builtins
import sys
import types

import pytest
import tqdm
import tqdm.notebook
from joblib import Parallel, delayed

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier
from sktransfer._progress import notebook_bars, progress, shows_progress

from ._models import TinyConvNet


class ZMQInteractiveShell:
    """Stands for the shell of a Jupyter kernel: its class name is what tells a kernel from a terminal."""


@pytest.fixture
def jupyter_kernel(monkeypatch):
    shell = ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setattr(builtins, "get_ipython", lambda: shell, raising=False)  # what skorch looks up


@pytest.fixture
def without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` raises ImportError


@pytest.fixture
def with_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))


def progress_bar(net):
    return dict(net.initialize_callbacks().callbacks_).get("progress_bar")


@pytest.mark.usefixtures("jupyter_kernel", "without_ipywidgets")
@pytest.mark.filterwarnings("ignore::sktransfer.domain_adaptation.NoTargetDataWarning")
@pytest.mark.parametrize("estimator", [FineTuneClassifier, DomainAdaptedClassifier])
def test_a_kernel_without_ipywidgets_gets_text_bars(estimator, labelled_images, capsys):
    X, y = labelled_images
    assert not notebook_bars()
    assert type(progress(range(3), verbose=1)) is tqdm.tqdm
    # skorch's own choice would be tqdm's notebook bar, which raises "IProgress not found" here.
    net = estimator(model=TinyConvNet, device="cpu", max_epochs=1, batch_size=8, strategy="full", verbose=1)
    net.fit(X, y)
    assert "train_loss" in capsys.readouterr().out


@pytest.mark.usefixtures("jupyter_kernel", "with_ipywidgets")
def test_a_kernel_with_ipywidgets_gets_notebook_bars():
    assert notebook_bars()
    assert isinstance(progress(range(3), verbose=0), tqdm.notebook.tqdm)
    assert progress_bar(FineTuneClassifier(verbose=1)).detect_notebook


@pytest.mark.usefixtures("with_ipywidgets")
def test_a_terminal_gets_text_bars():
    assert not notebook_bars()
    assert not progress_bar(FineTuneClassifier(verbose=1)).detect_notebook


def test_bars_in_joblib_workers_show_from_verbose_2():
    def bars(verbose):
        return shows_progress(verbose), progress_bar(FineTuneClassifier(verbose=verbose)) is not None

    assert bars(1) == (True, True)
    assert bars(0) == (False, False)
    in_workers = Parallel(n_jobs=2, backend="threading")(delayed(bars)(verbose) for verbose in (1, 2))
    assert in_workers == [(False, False), (True, True)]


def test_the_epoch_table_of_a_joblib_worker_shows_from_verbose_2(capsys):
    # cross_val_score(..., n_jobs=2) at verbose=1 printed both folds' tables into one another in the cell:
    # two headers, then the rows of epoch 1, 1, 2, 2 with nothing to tell the folds apart.
    import numpy as np

    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.arange(8) % 2

    def fit(verbose):
        FineTuneClassifier(model=None, max_epochs=2, device="cpu", verbose=verbose).fit(X, y)

    fit(1)
    assert capsys.readouterr().out.count("train_loss") == 1  # the main program's table
    Parallel(n_jobs=2, backend="threading")(delayed(fit)(verbose) for verbose in (1, 1))
    assert "train_loss" not in capsys.readouterr().out
    Parallel(n_jobs=2, backend="threading")(delayed(fit)(verbose) for verbose in (2, 2))
    assert capsys.readouterr().out.count("train_loss") == 2
