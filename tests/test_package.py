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


def _floors_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / ".ci" / "floors.py"
    spec = importlib.util.spec_from_file_location("floors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_txt_declares_the_same_floors_as_pyproject():
    from pathlib import Path

    requirements = [line.strip() for line in
                    (Path(__file__).resolve().parent.parent / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    floors = _floors_module()
    declared = [f"{name}>={version}" for name, version in floors.floors().items()]
    assert [r.split(",")[0] for r in requirements if not r.startswith("torch")] == declared
    assert "torch>=2.6" in requirements  # loose: Colab and GPU machines keep their own torch


def test_every_dependency_has_a_floor_that_ci_can_pin():
    pins = _floors_module().floors()
    # transformers' floor is a 4.x release: CI's floor job is also the transformers 4.x job.
    assert pins["transformers"].startswith("4.")
    assert "torch" not in pins and len(pins) == 7
