"""Warnings that point at the user's line, not at the package's inside.

``warnings.warn(..., stacklevel=N)`` counts frames, so a hard-coded ``N`` names the
wrong line as soon as a call is added between the user's code and the warning (one
did: rank 0's decision helper added two frames). :func:`warn_caller` attributes the
warning to the first frame outside this package instead: a notebook cell, a script, a
test. Python 3.12's ``warnings.warn(skip_file_prefixes=...)`` does the same, but the
package supports 3.10.
"""

from __future__ import annotations

import os
import sys
import warnings

#: Frames whose file starts with this are the package's own. Compared as written: every
#: module of the package was imported through the same path, so its frames share it.
_PACKAGE_PREFIX = os.path.dirname(__file__) + os.sep


def stacklevel_outside_package() -> int:
    """``stacklevel`` that, given to a ``warnings.warn`` in the caller, names the first frame
    outside the package (the outermost frame when every frame is the package's)."""
    frame = sys._getframe(1)  # the caller: stacklevel 1 is its own line
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_PREFIX):
        frame = frame.f_back
        level += 1
    if frame.f_globals.get("__name__") == "runpy":
        # ``python -m bert_tutorial.pretrain``: the package's own __main__ is the user's
        # command, and the frame outside it is runpy's ("<frozen runpy>"), which says nothing.
        level -= 1
    return level


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first frame outside the package."""
    warnings.warn(message, category, stacklevel=stacklevel_outside_package())
