"""docs/README.md is the learner's path: every page it names exists and the instruments page's examples run."""
import pathlib
import re

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
ROOT = DOCS.parent


def test_every_linked_page_exists_and_every_page_is_linked():
    text = (DOCS / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links, "docs/README.md links no page"
    missing = [link for link in links if not (DOCS / link).is_file()]
    assert not missing, f"docs/README.md links missing pages: {missing}"
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")} - {"README.md"}
    assert pages - set(links) == set(), f"pages not on the learner's path: {sorted(pages - set(links))}"


def test_reproduce_commands_name_existing_files():
    text = (DOCS / "README.md").read_text() + (DOCS / "experiments.md").read_text()
    for path in set(re.findall(r"\b((?:examples|tests)/[\w/]+\.py)\b", text)):
        assert (ROOT / path).is_file(), path


def test_viz_examples_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # the graph example writes graph.dot
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "viz.md").read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "docs/viz.md", "exec"), {})
    out = capsys.readouterr().out
    assert "digraph" in out and "mean |grad|" in out and "recomputes im2col" in out
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")
