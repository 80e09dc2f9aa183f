"""DataLoader workers inside joblib's workers (the loky start method simulated here; real ones in
tests/test_fine_tuning.py and tests/test_notebook.py)."""

import multiprocessing

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed, parallel_config
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer._parallel import in_joblib_worker, loader_processes
from sktransfer.exceptions import IgnoredSettingWarning

from ._models import TinyConvNet


def test_joblib_workers_are_told_from_the_main_program():
    assert not in_joblib_worker()
    assert Parallel(n_jobs=1)(delayed(in_joblib_worker)() for _ in range(2)) == [False, False]
    assert Parallel(n_jobs=2)(delayed(in_joblib_worker)() for _ in range(2)) == [True, True]


def test_the_default_start_method_is_kept_outside_loky(monkeypatch):
    assert loader_processes(0) == {"num_workers": 0}
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert loader_processes(2) == {"num_workers": 2}


def test_loky_processes_fork_their_dataloader_workers(monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "loky")
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn", "forkserver"])
    assert loader_processes(2) == {"num_workers": 2, "multiprocessing_context": "fork"}
    assert loader_processes(0) == {"num_workers": 0}
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # Windows
    with pytest.warns(IgnoredSettingWarning, match="cannot start DataLoader workers") as record:
        assert loader_processes(2) == {"num_workers": 0}
    assert record[0].filename == __file__


def _loads_in_the_process(num_workers):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keywords = loader_processes(num_workers)
    return keywords, [str(warning.message) for warning in caught]


def test_a_daemonic_process_loads_in_the_process_with_a_warning():
    # Dask's worker processes and multiprocessing's pools are daemonic: they may not start DataLoader workers.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        keywords, messages = pool.apply(_loads_in_the_process, (2,))
        assert pool.apply(_loads_in_the_process, (0,)) == ({"num_workers": 0}, [])
    assert keywords == {"num_workers": 0}
    assert len(messages) == 1
    assert "num_workers=2 cannot start DataLoader workers inside a daemonic" in messages[0]


def _batches_of_the_user(dataset, batch_size, collate_fn, num_workers, pin_memory):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin_memory
    )


def test_predicting_and_embedding_leave_torchs_global_generator_alone(labelled_images, tiny_text_model):
    # A DataLoader draws its workers' seed at every pass, from the global generator unless given one: each
    # prediction moved it, for the user and for a seeded fit in another thread, whose result then depended
    # on when the other thread predicted.
    X, y = labelled_images
    fitted = [
        FineTuneClassifier(model=TinyConvNet, device="cpu", max_epochs=1, random_state=0).fit(X, y),
        PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu").fit(X),
    ]
    text = PretrainedFeatureExtractor(model=tiny_text_model, device="cpu").fit(["a review", "another"])
    before = torch.get_rng_state()
    fitted[0].predict_proba(X)
    fitted[1].transform(X)
    text.transform(["a review", "another one", "a third"])
    assert torch.equal(torch.get_rng_state(), before)
    # an iterator of the user's that is no DataLoader class is given no generator, which it may not take
    assert fitted[0].set_params(iterator_valid=_batches_of_the_user).predict_proba(X).shape == (len(X), 2)


def test_seeded_fits_in_threads_give_what_they_give_one_after_the_other(labelled_images):
    # joblib's threading backend ran fits side by side, interleaving their draws from torch's generators.
    X, y = labelled_images
    clf = FineTuneClassifier(
        model=TinyConvNet, device="cpu", max_epochs=3, batch_size=4, strategy="full", lr=1e-2, random_state=0
    )
    folds = StratifiedKFold(4)
    alone = cross_val_predict(clf, X, y, cv=folds, method="predict_proba", n_jobs=1)
    with parallel_config(backend="threading"):
        threaded = cross_val_predict(clf, X, y, cv=folds, method="predict_proba", n_jobs=2)
    np.testing.assert_array_equal(threaded, alone)
