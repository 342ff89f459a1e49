"""The run machinery around the method: everything a real run needs beyond one step.

``python -m bert_tutorial.pretrain`` runs :func:`.cli.main`, which builds a
:class:`.trainer.Trainer` from the ``TrainConfig`` flags. Around the core's step the
Trainer adds: the run folder and its lock (:mod:`.run_dir`), crash-safe checkpoints and
exact resume (:mod:`.checkpoint`), the metrics log and its curves (:mod:`.metrics`,
:mod:`.curves`, :mod:`.loss_window`), stopping on a signal (:mod:`.signals`), device and
mixed precision (:mod:`.device`), DDP (:mod:`.distributed`), launching ``torchrun``
from a notebook (:mod:`.launch`) and the speed tricks plugged into the core
(:mod:`.speed`).

Layer rule (``tests/test_architecture.py``): imports the core, the contracts at the
package's top and its own modules; never the teaching helpers.
"""
