"""Plain text -> NVIDIA-format HDF5 shards of masked MLM + NSP instances.

``python -m bert_tutorial.create_data`` runs :func:`.cli.main`. The stages, one module
each: :mod:`.corpus` (text -> documents of sentences), :mod:`.wordpiece` (fast
tokenising), :mod:`.instances` (Google's ``create_pretraining_data`` algorithm),
:mod:`.masking` (a whole shard's masks drawn at once), :mod:`.shard_writer` (names, the
output folder, the buffer that fills a shard), :mod:`.pipeline` and :mod:`.workers`
(the ordered pipeline in one or N processes), :mod:`.report` (``--report``: what a run
would make, nothing written).

Layer rule (``tests/test_architecture.py``): imports only the contracts at the package's
top (``config``, ``hdf5_format``, ``tokenization``, ``safe_io``, ``warn``) and its own modules, and
never torch or transformers, so creating shards needs neither.
"""
