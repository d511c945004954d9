"""Every link between the project's Markdown files resolves: the file exists, and an anchor names
a heading of its target (GitHub's slugs). In process, no database."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    found = {ROOT / name for name in listed} | set(ROOT.glob("*.md")) | set((ROOT / "docs").glob("*.md"))
    return sorted(path for path in found if "node_modules" not in path.parts and path.exists())


def prose(path: Path) -> str:
    """The file without its fenced code blocks (a `#` there is a shell comment, not a heading)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def anchors(path: Path) -> set[str]:
    titles = re.findall(r"^#+ (.*)$", prose(path), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_of_a_document_resolves(document: Path) -> None:
    broken = []
    for target in LINK.findall(prose(document)):
        if re.match(r"[a-z]+:", target):
            continue  # a URL: not ours to check here
        file, _, anchor = target.partition("#")
        linked = (document.parent / file).resolve() if file else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_the_readme_stays_an_entrance() -> None:
    """What it is, the two commands, a first session and where to read on; the rest lives in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
