#!/usr/bin/env python
"""Write the repository URL, from its one place, into every notebook and the README.

The URL lives in ``pyproject.toml`` (``[project.urls] Repository``). From it this script
writes, identically everywhere: the setup cell (the first code cell of each notebook,
which clones and installs the repository in Colab), an "Open in Colab" badge under each
notebook's title, and the README's notebook table between its ``notebooks:start`` /
``notebooks:end`` markers.

    python scripts/sync_notebooks.py           # rewrite what is out of date
    python scripts/sync_notebooks.py --check   # only report; exit 1 if anything is out of date

To publish a fork: set ``Repository`` in pyproject.toml, run this script, commit.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
TABLE_START, TABLE_END = "<!-- notebooks:start -->", "<!-- notebooks:end -->"

SETUP_CELL = '''\
# Setup: in Colab or Kaggle, clone and install this repository (their torch is kept);
# locally, the checkout this notebook is in is used. Then work from the repository's root.
import subprocess
import sys
from pathlib import Path

REPO_URL = "{url}"
HOSTED = "google.colab" in sys.modules or Path("/kaggle/working").is_dir()
CLONE = Path("/content/repo" if "google.colab" in sys.modules else "/kaggle/working/repo")
if HOSTED and not (CLONE / "bert_tutorial").is_dir():
    if "YOUR-ACCOUNT" in REPO_URL:  # a copy not yet published
        raise RuntimeError(f"cannot clone {{REPO_URL}}: a placeholder: set [project.urls] Repository")
    if subprocess.run(["git", "clone", "--depth=1", REPO_URL, str(CLONE)]).returncode:
        raise RuntimeError(f"cannot clone {{REPO_URL}}: is the internet on?")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(CLONE)], check=True)
sys.path.insert(0, str(next(p for p in [CLONE, Path.cwd(), *Path.cwd().parents]
                            if (p / "bert_tutorial").is_dir())))
from bert_tutorial import enter_repository  # noqa: E402

ROOT = enter_repository()  # go to the repository's root and print the versions'''


def repo_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` (read with a regex: tomllib is Python 3.11+)."""
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"{pyproject}: no Repository = \"...\" under [project.urls]")
    return match.group(1).rstrip("/").removesuffix(".git")


def colab_link(url: str, notebook: str, branch: str = "main") -> str:
    """Colab opens a notebook of a public GitHub repository at this address."""
    path = url.split("github.com/", 1)[-1]
    return f"https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{notebook}"


def badge(url: str, notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_link(url, notebook)})"


def sync_notebook(path: Path, url: str, write: bool = True) -> bool:
    """Rewrite the setup cell and the title badge of one notebook; True when it was out of date."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    changed = False
    title = nb.cells[0]
    lines = [line for line in title.source.split("\n") if not line.startswith("[![Open In Colab]")]
    lines.insert(1, badge(url, path.name))
    if "\n".join(lines) != title.source:
        title.source, changed = "\n".join(lines), True
    setup = next(c for c in nb.cells if c.cell_type == "code")
    wanted = SETUP_CELL.format(url=url)
    if setup.source != wanted:
        setup.source, changed = wanted, True
    if changed and write:
        nbformat.write(nb, path)
    return changed


def readme_table(url: str) -> str:
    rows = ["| notebook | stage | |", "|---|---|---|"]
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        title = nb.cells[0].source.split("\n", 1)[0].lstrip("# ").strip()
        rows.append(f"| [`{path.name}`](notebooks/{path.name}) | {title} | {badge(url, path.name)} |")
    return "\n".join(rows)


def sync_readme(url: str, readme: Path = README, write: bool = True) -> bool:
    text = readme.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{readme}: add the markers {TABLE_START} and {TABLE_END} around the notebook table")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    new = f"{head}{TABLE_START}\n{readme_table(url)}\n{TABLE_END}{tail}"
    if new != text and write:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if out of date")
    args = parser.parse_args(argv)
    url = repo_url()
    write = not args.check
    stale = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if sync_notebook(p, url, write)]
    if sync_readme(url, write=write):
        stale.append("README.md")
    for name in stale if write else []:
        print(f"updated {name}")
    if args.check and stale:
        print(f"out of date with pyproject.toml's Repository URL: {', '.join(stale)}; "
              "run python scripts/sync_notebooks.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
