"""``python -m bert_tutorial.pretrain`` (also under ``torchrun``): see :mod:`bert_tutorial.pretrain.cli`."""

import sys

from .cli import main

sys.exit(main())
