"""The package's public surface: every advertised name resolves, and importing it is cheap."""

from __future__ import annotations

import subprocess
import sys

import bert_tutorial


def test_every_exported_name_resolves():
    for name in bert_tutorial.__all__:
        assert getattr(bert_tutorial, name) is not None, name


def test_importing_the_package_loads_neither_transformers_nor_matplotlib():
    code = ("import sys, bert_tutorial; from bert_tutorial import TrainConfig; "
            "print(sorted(m for m in ('transformers', 'matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
