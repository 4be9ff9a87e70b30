"""The worked examples in docs/ must run (a learner copies them first)."""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _runnable_blocks(name):
    text = (DOCS / name).read_text()
    # Blocks are runnable unless they reference names defined elsewhere (model, x, ...).
    return [block for block in re.findall(r"```python\n(.*?)```", text, re.S)
            if block.lstrip().startswith("import")]


@pytest.mark.parametrize("name", ["engine.md", "coming_from_pytorch.md"])
def test_worked_examples_run(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # examples may write files (a checkpoint)
    blocks = _runnable_blocks(name)
    assert blocks, f"{name} has no runnable example"
    for block in blocks:
        exec(compile(block, f"docs/{name}", "exec"), {})
    assert "True" in capsys.readouterr().out
