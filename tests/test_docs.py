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


ROOT = DOCS.parent
OP_MODULES = ["conv", "conv_transpose", "pooling", "upsampling", "normalization", "activation", "dropout",
              "loss", "linear"]
OP_PAGES = sorted(p.name for p in (DOCS / "ops").glob("*.md"))


def _named_files(text):
    return re.findall(r"(tinygrad_cnn/[\w/]+\.py)", text)


@pytest.mark.parametrize("module", OP_MODULES)
def test_every_op_module_docstring_ends_with_where_its_kernels_live(module):
    import ast
    source = (ROOT / "tinygrad_cnn" / "nn" / "functional" / f"{module}.py").read_text()
    last = ast.get_docstring(ast.parse(source)).strip().split("\n\n")[-1]
    assert last.startswith("Where the kernels live"), (module, last)
    for path in _named_files(last):
        assert (ROOT / path).is_file(), (module, path)


@pytest.mark.parametrize("page", OP_PAGES)
def test_every_op_page_ends_with_where_its_kernels_live(page):
    text = (DOCS / "ops" / page).read_text()
    last_section = text.split("\n## ")[-1]
    assert last_section.startswith("Where the kernels live"), page
    for path in _named_files(last_section):
        assert (ROOT / path).is_file(), (page, path)
