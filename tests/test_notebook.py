"""The estimators in a real Jupyter kernel, without ipywidgets: bars, reprs, and n_jobs with num_workers."""

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
# A tqdm bar as text, such as "100%|██████████| 3/3 [00:00<00:00, 12.34it/s]".
TEXT_BAR = re.compile(r"\d+/\d+ \[\d\d:\d\d")

CELLS = [
    f"""\
import sys
sys.modules["ipywidgets"] = None  # `import ipywidgets` fails, as where it is not installed
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from sklearn.model_selection import cross_val_score
from sktransfer import DomainAdaptedClassifier, FineTuneClassifier
from tests._models import TinyConvNet

rng = np.random.default_rng(0)
X = np.concatenate([rng.integers(0, 100, (12, 16, 16, 3)), rng.integers(150, 256, (12, 16, 16, 3))])
X = X.astype(np.uint8)
y = np.array(["dark"] * 12 + ["bright"] * 12, dtype=object)
tiny = dict(model=TinyConvNet, device="cpu", max_epochs=1, batch_size=8, random_state=0)""",
    'FineTuneClassifier(strategy="full", verbose=1, **tiny).fit(X, y)',
    "unlabelled = y.copy()\nunlabelled[::3] = -1\nDomainAdaptedClassifier(verbose=1, **tiny).fit(X, unlabelled);",
    """\
from sktransfer import ImportanceWeightingClassifier
shift = np.random.default_rng(0)  # a target beyond all but a handful of the source rows
features = np.concatenate([shift.normal(size=(300, 2)), shift.normal(3.5, 0.3, size=(100, 2))])
labels = np.concatenate([(features[:300, 0] > 0).astype(int), np.full(100, -1)])
ImportanceWeightingClassifier(clip=None, random_state=0).fit(features, labels)""",
    """\
import tempfile
from sktransfer import PretrainedFeatureExtractor
PretrainedFeatureExtractor("all-MiniLM-L6-v2", device="cpu").fit(["a fine film"])  # imports transformers
from tests._text_models import REVIEWS, SENTIMENT, write_tiny_encoder
folder = str(write_tiny_encoder(tempfile.mkdtemp()))
try:
    PretrainedFeatureExtractor(folder).fit(["a fine film", None])
except ValueError as error:
    print(error)
FineTuneClassifier(folder, strategy="lora", verbose=1, device="cpu", max_epochs=2, batch_size=4).fit(REVIEWS, SENTIMENT)""",
    """\
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sktransfer import PrototypeClassifier, logme_score
flatten = FunctionTransformer(lambda images: images.reshape(len(images), -1) / 255.0)
try:
    FineTuneClassifier(teacher=make_pipeline(flatten, LogisticRegression()), **tiny).fit(X, y)
except Exception as error:
    print(type(error).__name__, error)
teacher = make_pipeline(flatten, LogisticRegression()).fit(X, y)
FineTuneClassifier(teacher=teacher, verbose=1, **tiny).fit(X, unlabelled)
print("LogME", round(logme_score(flatten.transform(X), y), 3))
PrototypeClassifier().fit(flatten.transform(X), y)""",
    """\
from sklearn.preprocessing import StandardScaler
from sktransfer import FeatureAlignmentClassifier
named = np.array(["a", "b"] * 3 + ["-1"] * 3)  # "-1" as text is a class: a warning says so
make_pipeline(StandardScaler(), FeatureAlignmentClassifier()).fit(shift.normal(size=(9, 2)), named);
embed = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(X)
embed.set_params(layer="features.0").transform(X[:2]).shape""",
    """\
import warnings
from sktransfer.exceptions import SettingsChangedWarning
warnings.filterwarnings("ignore", category=SettingsChangedWarning)  # read above: silenced from here on
embed.set_params(layer="features.1").transform(X[:2]).shape""",
    """\
import torch
from sktransfer.domain_adaptation import objectives
first = lambda logits, threshold, balance, labelling_logits: 100 * torch.nn.functional.cross_entropy(  # a collapsing self-training
    logits, torch.zeros(len(logits), dtype=torch.long))
objectives.pseudo_label_loss = first
DomainAdaptedClassifier(method="self_training", **{**tiny, "max_epochs": 6, "lr": 0.05}).fit(X, unlabelled);""",
    "print(cross_val_score(FineTuneClassifier(num_workers=2, verbose=1, **tiny), X, y, cv=2, n_jobs=2))",
    "import time\ntime.sleep(1)  # output the workers write late would come here",
]


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel spec that runs this interpreter (this virtual environment), visible to this test only."""
    spec = tmp_path / "jupyter" / "kernels" / "sktransfer-tests"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(json.dumps({"argv": argv, "display_name": "sktransfer tests"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return "sktransfer-tests"


def streams(cell, name):
    return "".join(output["text"] for output in cell.outputs if output.get("name") == name)


def test_a_notebook_without_ipywidgets(kernel_name):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_name, timeout=120, resources={"metadata": {"path": str(ROOT)}}
    )
    _, fit, adapt, reweight, text, before_after, in_pipeline, silenced, collapse, cross_validation, late = (
        client.execute().cells
    )

    # Text bars where the notebook cannot draw widgets, and skorch's epoch table.
    assert TEXT_BAR.search(streams(fit, "stderr"))
    assert "train_loss" in streams(fit, "stdout")
    assert TEXT_BAR.search(streams(adapt, "stderr"))

    # The fitted estimator shows as scikit-learn's do: the parameters set, in text and in HTML.
    (result,) = [output for output in fit.outputs if output.output_type == "execute_result"]
    assert result.data["text/plain"] == (
        "FineTuneClassifier(batch_size=8, device='cpu', max_epochs=1,\n"
        "                   model=<class 'tests._models.TinyConvNet'>, random_state=0,\n"
        "                   strategy='full', verbose=1)"
    )
    assert result.data["text/html"].count('<tr class="user-set">') == 7

    # A warning the user can act on shows once, under the cell, and the estimator shows its parameters.
    assert streams(reweight, "stderr").count("FewEffectiveRowsWarning") == 1
    assert "effective_sample_size_" in streams(reweight, "stderr")
    (result,) = [output for output in reweight.outputs if output.output_type == "execute_result"]
    assert result.data["text/plain"] == "ImportanceWeightingClassifier(clip=None, random_state=0)"

    # Importing transformers (tqdm.auto) does not warn "IProgress not found" under the first text cell.
    assert "IProgress" not in streams(text, "stderr")
    # Text: a bad sample is named; LoRA's fit log has the share of parameters that train, one row per epoch.
    assert "X: sample 1 is None; every sample must be a string" in streams(text, "stdout")
    assert "trainable_fraction" in streams(text, "stdout")
    assert re.search(r"\n +2 .+ 0\.\d{4} +0 ", streams(text, "stdout"))  # the epoch, the share, the stages
    (result,) = [output for output in text.outputs if output.output_type == "execute_result"]
    assert "strategy='lora'" in result.data["text/plain"]

    # Distillation: an unfitted teacher is named before training; the student's fit log shows; scores print.
    assert "teacher" in streams(before_after, "stdout").splitlines()[0]
    assert "train_loss" in streams(before_after, "stdout")
    assert re.search(r"LogME -?\d+\.\d+", streams(before_after, "stdout"))
    (result,) = [output for output in before_after.outputs if output.output_type == "execute_result"]
    assert result.data["text/plain"] == "PrototypeClassifier()"

    # A warning from deep inside a Pipeline's fit points at the cell's line, not at a frame of sklearn's.
    warned = streams(in_pipeline, "stderr")
    assert "TextLabelWarning" in warned
    assert "sklearn" not in warned
    assert "make_pipeline(StandardScaler(), FeatureAlignmentClassifier())" in warned  # the line shown
    # A setting changed after fit that transform cannot follow says so once, naming it.
    assert (
        warned.count("SettingsChangedWarning: layer changed after fitting (from None to 'features.0')") == 1
    )

    # Silenced by its class from sktransfer.exceptions, the warning no longer shows; transform still runs.
    assert "Warning" not in streams(silenced, "stderr")
    (result,) = [output for output in silenced.outputs if output.output_type == "execute_result"]
    assert result.data["text/plain"] == "(2, 8)"

    # Self-training that empties a class of the target predictions says so once, naming the class.
    assert streams(collapse, "stderr").count("PseudoLabelCollapseWarning") == 1
    assert re.search(r"'(dark|bright)' \d+% → 0\.0%", streams(collapse, "stderr"))
    assert "objectives.py" not in streams(collapse, "stderr")  # it points at the cell's line that called fit

    # Folds in worker processes, each loading images in worker processes of its own, with no bars and no
    # epoch tables printed into one another.
    assert re.fullmatch(r"\[[0-9. ]+\]\n", streams(cross_validation, "stdout").splitlines(keepends=True)[-1])
    assert "train_loss" not in streams(cross_validation, "stdout")
    for cell in (cross_validation, late):
        assert not TEXT_BAR.search(streams(cell, "stderr") + streams(cell, "stdout"))
