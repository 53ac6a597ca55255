"""The README's search examples, run against what `make demo` produces.

`make demo` writes the three portraits of `workers.devset --demo` and labels them with the default
labeler (`humantag run PHOTOS --out OUTPUT`): here the same photos and the same flow, in-process on the
session's Ray. Every `humantag search` line of the README's "Searching the labels" block then runs on
that output: it must exit 0 and either find images or say, for a field no row has, that the labeler
which made the rows does not produce it. Nothing here depends on what the labeler finds today.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "./labels-out"


def readme_search_examples() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Searching the labels"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("humantag search")]


@pytest.fixture(scope="module")
def demo_output(ray_local, tmp_path_factory) -> Path:
    from humantag.flows.config import RunConfig
    from humantag.flows.label_archive import run_label_archive
    from humantag.flows.listing import SourceSpec
    from humantag.workers.devset import PORTRAITS, write_devset

    base = tmp_path_factory.mktemp("demo-out")
    write_devset(base / "photos", PORTRAITS)
    summary = run_label_archive(RunConfig(source=SourceSpec(url=str(base / "photos")), dest=str(base / "output"),
                                          run_id="demo"))  # no labeler: chosen as `humantag run` does (cpu without a GPU)
    assert summary.total_images == len(PORTRAITS)
    return base / "output"


def run_cli(args: list[str], monkeypatch, capsys, opensearch: bool = False) -> tuple[int, str, str]:
    """`humantag ARGS` in this process: (exit code, stdout, stderr). Without OpenSearch unless asked."""
    from humantag.flows.cli import command

    monkeypatch.setattr(sys, "argv", ["humantag", *args])
    if not opensearch:
        monkeypatch.setenv("OPENSEARCH_URL", "")
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        command()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def test_readme_has_search_examples() -> None:
    examples = readme_search_examples()
    assert len(examples) >= 4 and any(PLACEHOLDER in e for e in examples)
    assert any(len(e) > 1 and not e[1].startswith("-") for e in examples if PLACEHOLDER in e)  # a plain-language one


def test_readme_search_examples_on_the_demo_output(demo_output, monkeypatch, capsys) -> None:
    for example in readme_search_examples():
        args = [str(demo_output) if a == PLACEHOLDER else a for a in example]
        code, out, err = run_cli(args, monkeypatch, capsys)
        assert code == 0, (example, err)
        if "--fields" in args:
            assert "person.eyewear" in out
            continue
        if "--format" in args:
            summary = __import__("json").loads(out.splitlines()[-1])
            total = summary["total"]
            honest = [n["message"] for n in summary.get("not_produced", [])]
        else:
            total = int(re.search(r"^(\d[\d,]*) images? match", out, re.MULTILINE).group(1).replace(",", ""))
            honest = [line for line in out.splitlines() if "not produce this field" in line]
        assert total > 0 or honest, (example, out)
        if total == 0:
            assert all("labeler" in line and "docs/" in line for line in honest), honest
