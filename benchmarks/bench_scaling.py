"""Scaling out on Dask: extraction throughput and grid-search wall time on 1 versus 2 local workers.

Rows, all measured in one run on local clusters of worker processes with one thread each (a fresh cluster
per row, so that each worker's peak memory belongs to that row), started without Dask's malloc trimming
(``UNSET_MALLOC_TRIM``) except in the row that measures it:
- ``transform_on_dask`` over N image files (EfficientNet-Lite0, bfloat16), from an unfitted extractor (each
  worker loads the backbone): images per second on 1 and 2 workers, the speed-up of 2 over 1, and each
  worker's peak resident memory; next to the extractor's own fit and ``transform`` in this process with one
  thread (the baseline: one worker's compute) and with every thread (no Dask).
- the same on 3N files: the workers' peak memory should not grow with N (a batch at a time is decoded).
- 1 worker started with Dask's default environment (``MALLOC_TRIM_THRESHOLD_=65536``).
- ``GridSearchCV`` of FineTuneClassifier (4 candidates × 2 folds, LP-FT) with joblib's Dask backend on 2
  workers, against ``n_jobs=1`` in this process with one thread and with every thread. (On a 1-core cluster
  joblib runs the search in the calling process, so the 1-thread run stands for one worker.)

Each row is the best of ``--rounds`` runs (this machine's timings vary by tens of percent between runs).

Usage: python benchmarks/bench_scaling.py [--images 600] [--batch-size 32] [--rounds 2]
"""

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dask
import joblib
import numpy as np
import psutil
import torch
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer.backbones import OFFLINE_MODEL_NAME, input_scaling
from sktransfer.datasets import load_textures, save_image_folder
from sktransfer.distributed import UNSET_MALLOC_TRIM, SlowWorkersWarning, transform_on_dask


def _peak_rss_mib():
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def _rss_mib():
    return psutil.Process().memory_info().rss / 2**20


def _cluster(n_workers, dask_defaults=False):
    with contextlib.nullcontext() if dask_defaults else dask.config.set(UNSET_MALLOC_TRIM):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)


def _warm_up(client):
    """Import torch and sktransfer on every worker, so that timings and memory exclude the start-up."""
    client.run(lambda: __import__("sktransfer.distributed"))
    return list(client.run(_rss_mib).values())


def extraction_on_dask(paths, n_workers, batch_size, dask_defaults=False):
    extractor = PretrainedFeatureExtractor(batch_size=batch_size, precision="bfloat16")
    with _cluster(n_workers, dask_defaults) as cluster, Client(cluster) as client:
        idle = _warm_up(client)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SlowWorkersWarning)
            embeddings = transform_on_dask(extractor, paths, client=client, partition_size=2 * batch_size)
        seconds = time.perf_counter() - start
        peaks = list(client.run(_peak_rss_mib).values())
    return embeddings, len(paths) / seconds, idle, peaks


@contextlib.contextmanager
def _torch_threads(threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def extraction_in_process(paths, threads, batch_size):
    """Fit (load the backbone) and transform, as a worker does on its first partition."""
    with _torch_threads(threads):
        start = time.perf_counter()
        extractor = PretrainedFeatureExtractor(batch_size=batch_size, precision="bfloat16").fit(paths[:1])
        embeddings = extractor.transform(paths)
        return embeddings, len(paths) / (time.perf_counter() - start)


def _fine_tune_search(n_jobs):
    # The textures at their own 64×64 size (no resize to 224): a grid search of many small fits.
    preprocess = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*input_scaling(OFFLINE_MODEL_NAME))]
    )
    clf = FineTuneClassifier(
        strategy="lp_ft", max_epochs=3, batch_size=16, preprocess=preprocess, random_state=0, device="cpu"
    )
    grid = {"lr": [1e-3, 3e-3], "backbone_lr_ratio": [0.1, 0.3]}
    return GridSearchCV(clf, grid, cv=2, n_jobs=n_jobs, refit=False)


def grid_search_on_dask(X, y, n_workers):
    with _cluster(n_workers) as cluster, Client(cluster) as client:
        _warm_up(client)
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search = _fine_tune_search(n_jobs=-1).fit(X, y)
        seconds = time.perf_counter() - start
        peaks = list(client.run(_peak_rss_mib).values())
    return search, seconds, peaks


def grid_search_in_process(X, y, threads):
    with _torch_threads(threads):
        start = time.perf_counter()
        search = _fine_tune_search(n_jobs=1).fit(X, y)
        return search, time.perf_counter() - start


def _best(rounds, sign, measure, *args, **kwargs):
    """The run of ``measure`` whose second result (a rate: sign 1, or a time: sign -1) is the best."""
    return max((measure(*args, **kwargs) for _ in range(rounds)), key=lambda result: sign * result[1])


def _mib(values):
    return " / ".join(f"{value:.0f}" for value in values)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="each row is the best of this many runs")
    args = parser.parse_args()

    images, labels = load_textures(n_per_class=args.images // 5, patch_size=64)
    folder = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    paths = save_image_folder(images, labels, folder / "small")
    more_paths = save_image_folder(
        np.concatenate([images] * 3), np.concatenate([labels] * 3), folder / "large"
    )
    n, batch = len(paths), args.batch_size

    threads, rounds = torch.get_num_threads(), args.rounds
    extraction_in_process(paths[: 2 * batch], 1, batch)  # first reads of the weights and files
    reference, one_thread = _best(rounds, 1, extraction_in_process, paths, 1, batch)
    _, all_threads = _best(rounds, 1, extraction_in_process, paths, threads, batch)
    on_one, rate_one, idle_one, peak_one = _best(rounds, 1, extraction_on_dask, paths, 1, batch)
    on_two, rate_two, idle_two, peak_two = _best(rounds, 1, extraction_on_dask, paths, 2, batch)
    _, rate_large, _, peak_large = _best(rounds, 1, extraction_on_dask, more_paths, 2, batch)
    for result in (on_one, on_two):
        np.testing.assert_allclose(result, reference, rtol=1e-2, atol=1e-2)  # bfloat16 autocast
    print(f"extraction: in-process {one_thread:.1f} (1 thread), {all_threads:.1f} img/s (all threads)")
    print(
        f"extraction on Dask: 1 worker {rate_one:.1f}, 2 workers {rate_two:.1f} img/s: {rate_two / rate_one:.2f}x"
    )

    X, y = load_textures(n_per_class=12, patch_size=64)
    single, single_seconds = _best(rounds, -1, grid_search_in_process, X, y, 1)
    serial, serial_seconds = _best(rounds, -1, grid_search_in_process, X, y, threads)
    on_dask, dask_seconds, grid_peak = _best(rounds, -1, grid_search_on_dask, X, y, 2)
    # Last: a nanny started with Dask's defaults writes MALLOC_TRIM_THRESHOLD_ into this process's
    # environment, which every later worker would inherit.
    _, rate_trimmed, idle_trimmed, peak_trimmed = _best(
        rounds, 1, extraction_on_dask, paths, 1, batch, dask_defaults=True
    )
    best = [
        search.cv_results_["params"][np.argmin(search.cv_results_["rank_test_score"])]
        for search in (single, serial, on_dask)
    ]
    print(
        f"grid search: 1 thread {single_seconds:.1f}s, {threads} threads {serial_seconds:.1f}s, 2 workers {dask_seconds:.1f}s"
    )

    speed_up = rate_two / rate_one
    grid_speed_up = single_seconds / dask_seconds
    body = f"""## Scaling out on Dask: 1 versus 2 local workers (cpu)

{environment_line(torch.device("cpu"))}; dask {dask.__version__}.
Local clusters of worker processes with one thread each (Dask sets `OMP_NUM_THREADS=1` in its workers),
started without Dask's malloc trimming (`UNSET_MALLOC_TRIM`) unless the row says otherwise; a fresh cluster
per run, warmed up (torch and sktransfer imported) before the clock starts; each row is the best of {rounds}
runs. Memory is each worker's resident set: idle after the warm-up, and its peak over the run.

### Embeddings of image files with `transform_on_dask` (EfficientNet-Lite0, bfloat16, 64×64 PNG files → 224×224, batch {batch}, partitions of {2 * batch}; timed from an unfitted extractor, backbone loading included)

| run | files | images/s | ratio | worker memory idle → peak (MiB) |
|---|---|---|---|---|
| fit + `transform` in this process, 1 thread (baseline: one worker's compute) | {n} | {one_thread:.1f} | 1.00× | |
| fit + `transform` in this process, {threads} threads | {n} | {all_threads:.1f} | {all_threads / one_thread:.2f}× | |
| Dask, 1 worker | {n} | {rate_one:.1f} | {rate_one / one_thread:.2f}× | {_mib(idle_one)} → {_mib(peak_one)} |
| Dask, 2 workers | {n} | {rate_two:.1f} | {rate_two / one_thread:.2f}× | {_mib(idle_two)} → {_mib(peak_two)} |
| Dask, 2 workers, 3× the files | {3 * n} | {rate_large:.1f} | {rate_large / one_thread:.2f}× | → {_mib(peak_large)} |
| Dask, 1 worker, Dask's default `MALLOC_TRIM_THRESHOLD_=65536` | {n} | {rate_trimmed:.1f} | {rate_trimmed / one_thread:.2f}× | {_mib(idle_trimmed)} → {_mib(peak_trimmed)} |

Speed-up of 2 workers over 1: **{speed_up:.2f}×**. Embeddings on Dask match the in-process ones (bfloat16
tolerance). Peak worker memory with 3× the files: {_mib(peak_large)} MiB, against {_mib(peak_two)} MiB:
it follows the batch and the partition, not the number of files. Dask's default malloc trimming costs
{rate_one / rate_trimmed:.2f}× in throughput.

### `GridSearchCV` of FineTuneClassifier (LP-FT, 3 epochs, 4 candidates × 2 folds, 60 texture images at 64×64)

| run | wall time (s) | ratio | worker peak memory (MiB) | best parameters |
|---|---|---|---|---|
| `n_jobs=1` in this process, 1 thread (baseline: one worker's compute) | {single_seconds:.1f} | 1.00× | | {best[0]} |
| `n_jobs=1` in this process, {threads} threads | {serial_seconds:.1f} | {single_seconds / serial_seconds:.2f}× | | {best[1]} |
| joblib Dask backend, 2 workers | {dask_seconds:.1f} | {single_seconds / dask_seconds:.2f}× | {_mib(grid_peak)} | {best[2]} |

Speed-up of 2 workers over one worker's compute: **{grid_speed_up:.2f}×**. Same best parameters in all
three runs: {best[0] == best[1] == best[2]}. On a 1-core cluster joblib's Dask backend runs the search in
the calling process, so the 1-thread run stands for one worker.
"""
    write_section("bench_scaling.py", body)


if __name__ == "__main__":
    main()
