"""The README's "From PyTorch" example runs as written (in a scratch directory): the loss falls
and the export loads with from_pretrained."""
import contextlib
import io
import os
import re
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")


def test_the_readme_example_runs_as_written(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## From PyTorch", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)
    losses = [float(line.split()[1]) for line in out.getvalue().splitlines() if re.match(r"^\d+ ", line)]
    assert len(losses) == 40
    assert losses[-1] < 1.0 < losses[0], losses
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-trained")
    assert model.config.n_layer == 4
