"""The end of every notebook's setup cell: the repository's root, a restart check, the versions.

The setup cell itself only clones and installs the repository where a hosted runtime
(Colab, Kaggle) has none; everything that can wait until the package is importable
lives here, so the cell stays short and the same in every notebook.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
from pathlib import Path

from ..config import REPO_ROOT


def enter_repository() -> Path:
    """Change to the repository's root, refuse a stale transformers, print what runs here.

    Relative paths in the notebooks (``data_samples/``, ``runs/``) then resolve the
    same from every notebook, wherever Jupyter was started. A hosted runtime may have
    imported its own transformers before the setup cell installed this package's
    requirements; Python keeps the loaded modules until the kernel restarts, so the
    two versions would be mixed.
    """
    loaded = sys.modules.get("transformers")
    if loaded is not None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            installed = importlib.metadata.version("transformers")
            version = getattr(loaded, "__version__", installed)
            if version != installed:
                raise RuntimeError(f"transformers {version} is loaded but {installed} is installed now: "
                                   "restart the session (Colab: Runtime > Restart session), then run "
                                   "all cells again.")
    os.chdir(REPO_ROOT)
    import torch
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, device: {device}")
    return REPO_ROOT
