"""Scaling out on Dask: extraction of path lists, and searches through joblib's Dask backend.

One local cluster of two worker processes serves the whole module; starting one takes a few seconds.
"""

import pickle
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer.datasets import save_image_folder
from sktransfer.distributed import (
    UNSET_MALLOC_TRIM,
    PartitionError,
    PartitionFailedWarning,
    SlowWorkersWarning,
    transform_on_dask,
)
from sktransfer.exceptions import TruncatedTextsWarning

from ._models import CountingNet, TinyConvNet
from ._text_models import REVIEWS

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
dask_bag = pytest.importorskip("dask.bag")
dask_array = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client():
    with dask.config.set(UNSET_MALLOC_TRIM):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def paths(tmp_path, labelled_images):
    X, y = labelled_images
    return save_image_folder(X, y, tmp_path / "images")


def _reset_counts(client):
    CountingNet.calls.clear()
    client.run(lambda: CountingNet.calls.clear())  # runs on each worker, on its own copy of the class


def _counts_per_worker(client):
    return client.run(lambda: list(CountingNet.calls))


def _image_rows_on_workers(client):
    return sum(client.run(CountingNet.image_rows).values())


def test_dask_extraction_equals_the_single_process_path(client, paths):
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu")
    expected = extractor.fit(paths).transform(paths)
    on_dask = transform_on_dask(extractor, paths, client=client, partition_size=5)
    np.testing.assert_allclose(on_dask, expected, rtol=1e-5, atol=1e-6)

    bag = dask_bag.from_sequence(paths, npartitions=3)
    np.testing.assert_allclose(
        transform_on_dask(extractor, bag, client=client), expected, rtol=1e-5, atol=1e-6
    )
    array = dask_array.from_array(np.array(paths, dtype=object), chunks=7)
    np.testing.assert_allclose(
        transform_on_dask(extractor, array, client=client), expected, rtol=1e-5, atol=1e-6
    )
    # A DataFrame iterates over its column names: one row, of the word "path", came back for every path.
    for table in (pd.DataFrame({"path": paths}), pd.Series(paths), np.array(paths)[:, None]):
        np.testing.assert_allclose(
            transform_on_dask(extractor, table, client=client), expected, rtol=1e-5, atol=1e-6
        )


def _advance_torch_random_stream(dask_worker):
    torch.rand(1 + int(dask_worker.address.rsplit(":", 1)[1]) % 7)  # as far as the worker's port says


def test_random_weights_without_a_seed_are_one_network_on_every_worker(client, paths):
    # Each worker fitted its own clone and drew its own weights: rows alternated between networks.
    client.run(_advance_torch_random_stream)  # a fresh process starts from torch's fixed seed: not so later
    torch.rand(3)
    same_image = [paths[0]] * 6
    rows = transform_on_dask(
        PretrainedFeatureExtractor(model=TinyConvNet, device="cpu"),
        same_image,
        client=client,
        partition_size=1,
    )
    np.testing.assert_allclose(rows, np.repeat(rows[:1], len(rows), axis=0), rtol=1e-6)
    fitted = PretrainedFeatureExtractor(model=TinyConvNet, weights=None, device="cpu").fit(paths)  # as fitted
    np.testing.assert_allclose(
        transform_on_dask(fitted, paths, client=client, partition_size=3),
        fitted.transform(paths),
        rtol=1e-5,
        atol=1e-6,
    )


def test_each_worker_loads_the_backbone_once(client, paths):
    _reset_counts(client)
    transform_on_dask(
        PretrainedFeatureExtractor(model=CountingNet, device="cpu"), paths, client=client, partition_size=3
    )
    counts = _counts_per_worker(client)
    # fit runs two single rows (the classifier check, the output size); partitions run 3 rows or fewer
    loads = {worker: calls.count(1) / 2 for worker, calls in counts.items()}
    assert sum(loads.values()) >= 1
    assert max(loads.values()) == 1  # 8 partitions, at most one load per worker
    assert _image_rows_on_workers(client) == len(paths)


def test_a_failed_partition_is_reported_with_its_paths(client, paths, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with_broken = [*paths[:6], str(broken), *paths[6:]]
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu")
    with pytest.raises(PartitionError, match="partition 1") as error:
        transform_on_dask(extractor, with_broken, client=client, partition_size=5, retries=1)
    [(index, failed_paths, exception)] = error.value.failures
    assert index == 1
    assert failed_paths == with_broken[5:10]
    assert "broken.png" in str(exception)

    with pytest.warns(PartitionFailedWarning, match="broken.png") as record:
        embeddings = transform_on_dask(extractor, with_broken, client=client, partition_size=5, errors="nan")
    assert [w.filename for w in record if w.category is PartitionFailedWarning] == [__file__]
    assert np.isnan(embeddings[5:10]).all()
    expected = extractor.fit(paths).transform(paths)
    np.testing.assert_allclose(embeddings[:5], expected[:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embeddings[10:], expected[9:], rtol=1e-5, atol=1e-6)
    with pytest.warns(PartitionFailedWarning, match="nan"):  # a gap in a column of paths, NaN rows too
        gap = transform_on_dask(
            extractor, [*paths[:5], np.nan], client=client, partition_size=5, errors="nan"
        )
    assert np.isnan(gap[5]).all()
    # every worker fits on X's first item: where that one is broken, only its own partition fails
    with pytest.warns(PartitionFailedWarning, match="broken.png"):
        first_broken = transform_on_dask(
            extractor, [str(broken), *paths], client=client, partition_size=5, errors="nan", retries=0
        )
    assert np.isnan(first_broken[:5]).all()
    np.testing.assert_allclose(first_broken[5:], expected[4:], rtol=1e-5, atol=1e-6)


def test_the_current_client_is_the_default(client, paths):
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu")
    np.testing.assert_allclose(
        transform_on_dask(extractor, paths[:4]),
        extractor.fit(paths).transform(paths[:4]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_without_dask_the_error_names_the_extra(paths, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'sktransfer\[dask\]'"):
        transform_on_dask(PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu"), paths)


def _unreadable(path):
    if path.endswith("000003.png"):
        raise OSError(f"storage unavailable for {path}")
    return path


def test_a_partition_of_paths_that_cannot_be_loaded_is_reported(client, paths):
    bag = dask_bag.from_sequence(paths, npartitions=3).map(_unreadable)
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu")
    for errors in ("raise", "nan"):  # its number of rows is unknown: no NaN rows can stand for it
        with pytest.raises(PartitionError, match=r"partition 0 \(its paths could not be loaded\): OSError"):
            transform_on_dask(extractor, bag, client=client, retries=0, errors=errors)


def test_bad_arguments_are_named(client, paths):
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu")
    with pytest.raises(ValueError, match="partition_size"):
        transform_on_dask(extractor, paths, client=client, partition_size=0)
    with pytest.raises(ValueError, match="X is empty"):
        transform_on_dask(extractor, [], client=client)
    with pytest.raises(ValueError, match=r"X: sample 3 is None, a NoneType") as raised:
        transform_on_dask(extractor, [*paths[:3], None], client=client, partition_size=2)  # among all of X
    assert not isinstance(raised.value, PartitionError)
    with pytest.raises(ValueError, match=r"DataFrame with 2 columns \(\['path', 'label'\]\)"):
        transform_on_dask(extractor, pd.DataFrame({"path": paths, "label": 0}), client=client)
    with pytest.raises(
        ValueError, match="extractor: The 'batch_size' parameter of PretrainedFeatureExtractor"
    ) as raised:
        transform_on_dask(extractor.set_params(batch_size=0), paths, client=client)
    assert not isinstance(raised.value, PartitionError)  # refused here, not by every partition's worker
    assert isinstance(raised.value, InvalidParameterError)  # as scikit-learn's own parameter errors are
    assert "transform_on_dask" not in str(raised.value)
    misspelt = PretrainedFeatureExtractor(model=TinyConvNet(), layer="features.9", device="cpu")
    with pytest.raises(ValueError, match=r"layer='features\.9' is not a layer of this model") as raised:
        transform_on_dask(misspelt, paths, client=client)
    assert not isinstance(raised.value, PartitionError)


def test_workers_with_dask_default_malloc_trimming_are_reported(paths, monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what Dask's nannies set in worker processes
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu")
    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        pytest.warns(SlowWorkersWarning, match="MALLOC_TRIM_THRESHOLD_=65536") as record,
    ):
        transform_on_dask(extractor, paths[:3], client=client)
    assert [w.filename for w in record if w.category is SlowWorkersWarning] == [__file__]


def _fine_tune_search():
    model = FineTuneClassifier(
        model=TinyConvNet,
        weights=None,
        strategy="linear_probe",
        max_epochs=3,
        batch_size=8,
        device="cpu",
        random_state=0,
    )
    return GridSearchCV(model, {"lr": [1e-5, 3e-2]}, cv=3)


def test_grid_search_on_dask_finds_the_same_parameters_as_one_process(client, labelled_images):
    X, y = labelled_images
    serial = _fine_tune_search().fit(X, y)
    with joblib.parallel_backend("dask"):
        on_dask = _fine_tune_search().set_params(n_jobs=-1).fit(X, y)
    assert on_dask.best_params_ == serial.best_params_ == {"lr": 3e-2}
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])


def test_estimators_fitted_on_dask_workers_come_back_picklable(client, labelled_images):
    X, y = labelled_images
    with joblib.parallel_backend("dask"):
        result = cross_validate(_fine_tune_search().estimator, X, y, cv=2, n_jobs=-1, return_estimator=True)
    for estimator in result["estimator"]:
        restored = pickle.loads(pickle.dumps(estimator))
        np.testing.assert_array_equal(restored.predict(X), estimator.predict(X))
        assert set(restored.predict(X)) <= set(y)


def test_an_embedding_cache_on_shared_storage_serves_every_worker(client, labelled_images, tmp_path):
    X, y = labelled_images
    pipeline = make_pipeline(
        PretrainedFeatureExtractor(model=CountingNet, device="cpu", cache=tmp_path / "cache"),
        LogisticRegression(),
    )
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=-1)
    _reset_counts(client)
    with joblib.parallel_backend("dask"):
        search.fit(X, y)  # fills the cache: some folds on one worker, some on the other
    first = CountingNet.image_rows() + _image_rows_on_workers(client)
    uncached = 3 * 3 * len(X) + len(X)  # each candidate embeds all X per fold, and the refit embeds X
    assert len(X) <= first < uncached

    _reset_counts(client)
    with joblib.parallel_backend("dask"):
        again = GridSearchCV(pipeline, search.param_grid, cv=3, n_jobs=-1).fit(X, y)
    assert CountingNet.image_rows() == _image_rows_on_workers(client) == 0
    assert again.best_params_ == search.best_params_


def test_texts_embed_on_dask_as_in_this_process(client, tiny_text_model):
    texts = REVIEWS * 3
    extractor = PretrainedFeatureExtractor(tiny_text_model, device="cpu")
    on_dask = transform_on_dask(extractor, texts, client=client, partition_size=5)
    np.testing.assert_allclose(on_dask, extractor.fit(texts).transform(texts), atol=1e-6)


def test_a_text_encoder_without_pooling_is_refused_here_not_by_every_partition(client, tiny_text_model):
    # It failed on every worker, for every partition and retry, reported as a PartitionError of "paths".
    extractor = PretrainedFeatureExtractor(tiny_text_model, pooling=None, device="cpu")
    with pytest.raises(ValueError, match="pooling=None flattens the token sequence") as raised:
        transform_on_dask(extractor, REVIEWS * 3, client=client, partition_size=5)
    assert not isinstance(raised.value, PartitionError)


def test_texts_cut_on_the_workers_are_named_among_all_of_x_in_one_warning(client, tiny_text_model):
    """A worker process's warning never reaches the user, and would number the texts within its partition."""
    long_text = " ".join(["a great film"] * 20)  # past the tiny encoder's 24 tokens
    texts = REVIEWS * 3
    texts[13] = texts[20] = long_text
    extractor = PretrainedFeatureExtractor(tiny_text_model, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_dask = transform_on_dask(extractor, texts, client=client, partition_size=5)
    cut = [w for w in caught if issubclass(w.category, TruncatedTextsWarning)]
    assert len(cut) == 1
    assert "2 of the 24 texts are longer than the encoder's maximum of 24 tokens (samples [13, 20];" in str(
        cut[0].message
    )
    assert cut[0].filename == __file__  # it points at the call
    with pytest.warns(TruncatedTextsWarning, match=r"samples \[13, 20\]"):
        here = extractor.fit(texts).transform(texts)
    np.testing.assert_allclose(on_dask, here, atol=1e-6)


def test_an_extractor_set_to_pandas_output_gives_the_same_frame_on_dask(client, paths):
    # Each worker returned a DataFrame, which the client took for no rows: "X is empty".
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu").set_output(transform="pandas")
    expected = extractor.fit(paths).transform(paths)
    on_dask = transform_on_dask(extractor, paths, client=client, partition_size=5)
    pd.testing.assert_frame_equal(on_dask, expected, rtol=1e-5, atol=1e-6)


def test_an_output_library_that_is_not_installed_is_named_before_any_work(client, paths, monkeypatch):
    import importlib.util

    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "pandas" else object()
    )
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu").set_output(transform="pandas")
    with pytest.raises(ImportError, match=r"set_output\(transform='pandas'\).*pip install pandas"):
        transform_on_dask(extractor, paths, client=client)


def test_weights_drawn_from_a_random_state_object_run_as_fitted(client, paths):
    # A clone carried the RandomState as fit had left it, and drew another network on the workers.
    fitted = PretrainedFeatureExtractor(
        model=TinyConvNet, weights=None, random_state=np.random.RandomState(0), device="cpu"
    ).fit(paths)
    np.testing.assert_allclose(
        transform_on_dask(fitted, paths, client=client, partition_size=5),
        fitted.transform(paths),
        rtol=1e-5,
        atol=1e-6,
    )


def test_workers_fit_on_the_first_item_of_x_as_a_local_fit_does(client, tmp_path):
    # Each worker fitted on its first partition's first image: flattened maps of images of another size were
    # cut into rows of the first partition's width, more rows than images, in silence.
    rng = np.random.default_rng(0)
    small = save_image_folder(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), ["a"] * 3, tmp_path / "s")
    large = save_image_folder(rng.integers(0, 256, (3, 30, 30, 3), dtype=np.uint8), ["a"] * 3, tmp_path / "l")
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), layer="features", pooling=None, device="cpu")
    with pytest.raises(PartitionError, match="partition 1"):
        transform_on_dask(extractor, small + large, client=client, partition_size=3, retries=0)
    with pytest.raises(PartitionError, match="partition 1"):  # a Dask bag's first item, too
        transform_on_dask(
            extractor, dask_bag.from_sequence(small + large, npartitions=2), client=client, retries=0
        )


def test_progress_bars_are_left_to_verbose_2_in_dask_tasks(client):
    # Inside a Dask task (joblib's dask backend, client.submit) every worker drew its bars and epoch tables.
    from sktransfer._progress import shows_progress

    assert shows_progress(1)  # here, in the main program
    assert client.submit(shows_progress, 1, pure=False).result() is False
    assert client.submit(shows_progress, 2, pure=False).result() is True
