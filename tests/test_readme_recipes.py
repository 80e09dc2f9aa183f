"""The README's "Scaling out" recipes run as written: each script is saved under its name and its command run."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("distributed")

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)


def _recipes():
    """(script name, script, command) for each python block named ``# name.py`` and the bash block after it."""
    section = README.read_text().split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    blocks = _BLOCK.findall(section)
    recipes = []
    for (language, code), (next_language, command) in itertools.pairwise(blocks):
        name = re.match(r"# (\w+\.py)\n", code)
        if language == "python" and name and next_language == "bash":
            recipes.append(pytest.param(name.group(1), code, command.strip(), id=name.group(1)))
    return recipes


def test_the_section_holds_three_recipes():
    assert [recipe.id for recipe in _recipes()] == ["train.py", "embed.py", "search.py"]


@pytest.mark.parametrize(("name", "script", "command"), _recipes())
def test_recipe_runs_as_written(name, script, command, tmp_path):
    (tmp_path / name).write_text(script)
    # `python` and `torchrun` are this environment's.
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    output = completed.stdout
    if name == "train.py":
        assert re.search(r"^2 processes, training accuracy (0\.\d\d|1\.00)$", output, re.MULTILINE), output
        assert output.count("training accuracy") == 1  # only the main process prints
        assert (tmp_path / "fine_tuned.joblib").exists()
    elif name == "embed.py":
        assert "(100, 1280)" in output
    else:
        assert output.count("{") == 2, output
