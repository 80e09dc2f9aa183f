"""Training under Hugging Face Accelerate, on the CPU: one process here, and two processes (DDP) in a subprocess."""

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Checkpoint, LRScheduler, TrainEndCheckpoint

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier

from ._models import CountingNet, TinyConvNet

accelerate = pytest.importorskip("accelerate")
REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_accelerator():
    """Accelerators of any settings: accelerate keeps one process-wide state, reset around each test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield lambda **settings: accelerate.Accelerator(cpu=True, **settings)
    AcceleratorState._reset_state(reset_partial_state=True)


def _gradual(**params):
    settings = {"model": TinyConvNet, "weights": None, "freeze_epochs": 1, "unfreeze_epochs": 2}
    return FineTuneClassifier(max_epochs=4, batch_size=8, random_state=0, **{**settings, **params})


def test_one_process_trains_as_without_the_accelerator(make_accelerator, labelled_images):
    X, y = labelled_images
    plain = _gradual(device="cpu").fit(X, y)
    accelerated = _gradual(accelerator=make_accelerator()).fit(X, y)
    assert accelerated.history[:, "trainable_stages"] == [0, 2, 3, 3]
    np.testing.assert_array_equal(accelerated.history[:, "train_loss"], plain.history[:, "train_loss"])
    np.testing.assert_array_equal(accelerated.predict_proba(X), plain.predict_proba(X))
    assert set(accelerated.predict(X)) <= set(y)


def test_the_fitted_classifier_is_unwrapped_and_pickles(make_accelerator, labelled_images, tmp_path):
    X, y = labelled_images
    accelerator = make_accelerator()
    callbacks = [  # a scheduler of the user's, and a checkpoint that pickles the whole net during training
        LRScheduler("StepLR", step_size=1, gamma=0.9),
        Checkpoint(monitor="train_loss_best", f_pickle="net.pkl", dirname=str(tmp_path)),
    ]
    # device="cpu": the accelerator's device; a restored copy runs on device= (a GPU where there is one)
    clf = _gradual(accelerator=accelerator, callbacks=callbacks, lr_schedule=None, device="cpu").fit(X, y)
    assert pickle.loads((tmp_path / "net.pkl").read_bytes()).accelerator is None
    assert type(clf.optimizer_) is torch.optim.AdamW
    assert "forward" not in vars(clf.module_)  # the accelerator's patched forward is gone
    assert accelerator._models == accelerator._optimizers == accelerator._dataloaders == []
    dumped = pickle.dumps(clf)
    assert b"accelerate" not in dumped  # loads and predicts where accelerate is not installed
    restored = pickle.loads(dumped)
    assert restored.accelerator is None
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)  # training resumes under the accelerator
    assert len(clf.history) == 8  # max_epochs more


def test_a_copy_keeps_the_accelerator_a_pickle_leaves(make_accelerator, labelled_images):
    # copy.deepcopy went through __getstate__, which leaves the accelerator out of pickles: the copy then
    # trained without it, silently.
    X, y = labelled_images
    accelerator = make_accelerator()
    for clf in (_gradual(accelerator=accelerator), _gradual(accelerator=accelerator).fit(X, y)):
        copied = copy.deepcopy(clf)
        assert copied.accelerator is accelerator
        assert copy.copy(clf).accelerator is accelerator
        assert pickle.loads(pickle.dumps(clf)).accelerator is None
    np.testing.assert_array_equal(copied.predict_proba(X), clf.predict_proba(X))
    copied.partial_fit(X, y)
    assert len(copied.history) == 8  # the copy trains on its own
    assert len(clf.history) == 4
    assert accelerator._models == []


def test_gradient_accumulation_adds_up_the_batches_of_a_cycle(make_accelerator):
    """Two accumulated batches of 4 rows make the same steps as one batch of 8 (a linear head, no BatchNorm)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    settings = {"model": None, "strategy": "linear_probe", "lr_schedule": None, "max_epochs": 3, "lr": 0.05}
    plain = FineTuneClassifier(batch_size=8, device="cpu", random_state=0, **settings).fit(X, y)
    accelerator = make_accelerator(gradient_accumulation_steps=2)
    accumulated = FineTuneClassifier(batch_size=4, accelerator=accelerator, random_state=0, **settings).fit(
        X, y
    )
    np.testing.assert_allclose(accumulated.predict_proba(X), plain.predict_proba(X), rtol=0, atol=1e-6)
    steps = [clf.optimizer_.state[clf.module_.head[1].weight]["step"].item() for clf in (plain, accumulated)]
    assert steps == [12, 12]


def test_mixed_precision_and_gradient_accumulation_come_from_the_accelerator(
    make_accelerator, labelled_images
):
    X, y = labelled_images
    accelerator = make_accelerator(mixed_precision="bf16", gradient_accumulation_steps=2)
    clf = _gradual(accelerator=accelerator, precision="bfloat16", lr=3e-2).fit(X, y)
    assert np.isfinite(clf.history[:, "train_loss"]).all()
    assert (clf.predict(X) == y).mean() > 0.9
    # 3 batches an epoch, the optimizer steps on every second one and on the last: 2 steps an epoch.
    assert clf.optimizer_.state[clf.module_.head[1].weight]["step"].item() == 2 * 4


def test_domain_adaptation_trains_under_the_accelerator(make_accelerator, labelled_images):
    X, y = labelled_images
    codes = (y == "bright").astype(int)
    codes[::4] = -1
    clf = DomainAdaptedClassifier(
        method="dann", model=TinyConvNet, weights=None, max_epochs=2, batch_size=8, random_state=0
    )
    plain = clf.set_params(device="cpu").fit(X, codes).predict_proba(X)
    accelerated = clf.set_params(device="auto", accelerator=make_accelerator()).fit(X, codes)
    np.testing.assert_allclose(accelerated.predict_proba(X), plain, atol=1e-6)


def test_settings_that_disagree_with_the_accelerator_are_refused_before_loading(
    make_accelerator, labelled_images
):
    X, y = labelled_images
    CountingNet.calls.clear()
    accelerator = make_accelerator(mixed_precision="bf16")
    with pytest.raises(
        ValueError, match=r"precision='float32'.*mixed_precision='bf16'.*precision='bfloat16'"
    ):
        _gradual(accelerator=accelerator, model=CountingNet).fit(X, y)
    with pytest.raises(ValueError, match="leave device='auto'"):
        _gradual(accelerator=accelerator, precision="bfloat16", device="meta").fit(X, y)
    with pytest.raises(ValueError, match="'accelerator' parameter"):
        _gradual(accelerator="yes").fit(X, y)
    assert CountingNet.calls == []


def test_an_accelerator_that_dispatches_batches_gets_them_preprocessed(make_accelerator, labelled_images):
    # With dispatch_batches, the main process loads every process's batch and concatenates them, which
    # needs tensors: the library's preprocessing then runs as they load, whatever the device.
    X, y = labelled_images
    config = accelerate.DataLoaderConfiguration(dispatch_batches=True)
    clf = FineTuneClassifier(model="resnet18", weights=None, max_epochs=1, batch_size=8)
    dispatching = clf.set_params(accelerator=make_accelerator(dataloader_config=config)).fit(X, y)
    plain = clone(dispatching).set_params(accelerator=None).fit(X, y)
    with mock.patch("sktransfer._training_data.resolve_device", return_value=torch.device("cuda")):
        assert not dispatching._preprocesses_on_the_gpu()
        assert plain._preprocesses_on_the_gpu()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One launch of tests/_ddp_training.py over two CPU processes (gloo), whose rank 1 fails at the end.

    Each launch costs the two processes' start (seconds of imports), so both tests below share this one.
    """
    out = tmp_path_factory.mktemp("ddp")
    # the repository first, then whatever the caller's path holds (packages installed outside the venv)
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    # CPU processes on any machine: where CUDA is visible, torch's barrier on a gloo group runs on the GPU
    environment = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    completed = subprocess.run(
        [*command, str(REPOSITORY / "tests" / "_ddp_training.py"), str(out)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return completed, out


def test_two_processes_keep_one_network(two_processes):
    """DDP over two CPU processes (gloo), gradual unfreezing included: the processes end with the same
    weights, which needs the network wrapped again each time a stage starts to train."""
    completed, out = two_processes
    assert all((out / f"rank{rank}.pt").exists() for rank in (0, 1)), completed.stderr[-3000:]
    first, second = (torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1))
    assert first["world_size"] == 2
    assert first["stages"] == [0, 2, 3, 3, 3]
    assert first["validation_losses"] == second["validation_losses"]
    for network in ("fine_tuned", "adapted", "stopped"):
        for name, tensor in first[network].items():
            torch.testing.assert_close(tensor, second[network][name], rtol=0, atol=0, msg=name)
    assert (first["predictions"] == first["labels"]).mean() > 0.9
    np.testing.assert_array_equal(first["class_weights"], second["class_weights"])
    np.testing.assert_array_equal(first["predicted_counts"], second["predicted_counts"])
    # Both processes' rows, not one's (the epoch's 12 batches split evenly, so accelerate repeats none).
    assert first["predicted_counts"].sum() == first["target_rows_per_epoch"]


def test_a_failing_process_ends_the_run_instead_of_waiting_for_it(two_processes):
    completed, _ = two_processes  # the script's last fit fails in rank 1, while rank 0 waits for it
    assert completed.returncode != 0
    assert "rank 1 fails in epoch 2" in completed.stderr


def test_processes_but_the_main_one_neither_print_nor_pickle_checkpoints(make_accelerator, monkeypatch):
    # Checkpoint writes f_pickle with pickle.dump, not save_params: every process wrote it, at once.
    checkpoint = Checkpoint(f_pickle="net.pkl", dirname="checkpoints", sink=print)
    at_the_end = TrainEndCheckpoint(f_pickle="end.pkl", dirname="checkpoints")
    clf = FineTuneClassifier(
        model=TinyConvNet,
        accelerator=make_accelerator(),
        callbacks=[checkpoint, at_the_end],
        classes=["a", "b"],
    )
    monkeypatch.setattr(FineTuneClassifier, "_is_main_process", lambda self: False)
    callbacks = dict(clf.initialize().callbacks_)
    copy = next(callback for callback in callbacks.values() if isinstance(callback, Checkpoint))
    assert copy.f_pickle is None
    assert copy.sink is not print
    assert checkpoint.f_pickle == "net.pkl"  # the user's object as given
    assert checkpoint.sink is print
    assert "print_log" not in callbacks
    end_copy = next(callback for callback in callbacks.values() if isinstance(callback, TrainEndCheckpoint))
    assert end_copy.checkpoint_.f_pickle is None  # skorch builds its inner Checkpoint at initialisation
    assert at_the_end.checkpoint_.f_pickle == "end.pkl"
