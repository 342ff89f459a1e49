#!/usr/bin/env python3
"""The lowest versions pyproject.toml allows, as pins, so that CI can test them.

    python .ci/floors.py            # prints "transformers==4.51.1 tokenizers==0.21 ..." (no torch)
    python .ci/floors.py --check    # exit 1 unless the installed versions are exactly those

torch is left out: the package index CI uses serves its CPU build only as 2.13.0. A dependency
without a ``>=`` floor is an error: every floor the project declares must be one it tests.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
NOT_PINNED = {"torch"}


def floors() -> dict[str, str]:
    """Dependency name -> its declared floor, for every runtime dependency but torch."""
    text = PYPROJECT.read_text(encoding="utf-8")
    if tomllib is not None:
        dependencies = tomllib.loads(text)["project"]["dependencies"]
    else:  # the list of quoted strings after "dependencies = ["
        block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
        dependencies = re.findall(r'^\s*"([^"]+)"', block, flags=re.M)
    pins = {}
    for requirement in dependencies:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", requirement)
        if match is None:
            sys.exit(f"pyproject.toml: dependency {requirement!r} has no '>=' floor to test")
        if match[1] not in NOT_PINNED:
            pins[match[1]] = match[2]
    return pins


def main() -> int:
    pins = floors()
    if "--check" not in sys.argv[1:]:
        print(" ".join(f"{name}=={version}" for name, version in pins.items()))
        return 0
    from packaging.version import Version  # a dependency of transformers: there after the install

    wrong = [f"{name} {metadata.version(name)} (the floor is {version})"
             for name, version in pins.items() if Version(metadata.version(name)) != Version(version)]
    for line in wrong:
        print("not at its floor:", line, file=sys.stderr)
    if not wrong:
        print("at their floors:", ", ".join(f"{n} {v}" for n, v in pins.items()))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
