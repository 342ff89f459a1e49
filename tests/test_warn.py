"""Package warnings name the user's line (the first frame outside the package)."""

from __future__ import annotations

import warnings

import pytest

from bert_tutorial.pretrain.run_dir import inputs_differences
from bert_tutorial.warn import stacklevel_outside_package, warn_caller


def test_a_warning_from_inside_the_package_names_the_callers_file_and_line():
    # A model folder against a hub name cannot be compared: warned from two package frames down.
    with pytest.warns(UserWarning, match="cannot compare") as caught:
        line = _line() + 1
        inputs_differences({"vocab_sha256": "v", "model": "sha256:x"}, {"vocab_sha256": "v", "model": "hub"},
                           {"model_name_or_path": "hub"})
    [warning] = caught
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_called_from_outside_the_package_it_is_the_callers_own_line():
    assert stacklevel_outside_package() == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_caller("here", RuntimeWarning)
    [warning] = caught
    assert warning.filename == __file__ and warning.category is RuntimeWarning


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno
