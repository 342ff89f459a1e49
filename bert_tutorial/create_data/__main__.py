"""``python -m bert_tutorial.create_data``: see :mod:`bert_tutorial.create_data.cli`."""

import sys

from .cli import main

sys.exit(main())
