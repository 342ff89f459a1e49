"""What the notebooks use to show things: nothing here is needed to train.

:mod:`.original` (the original tutorial's code, re-created: the "before" of every
comparison), :mod:`.decode` (a shard's sample decoded back to text, a batch as a
picture), :mod:`.masking_stats` (did the shards get the 15 % and the 80/10/10?),
:mod:`.fill_mask` (what the model learnt), :mod:`.verses` (the Bible sample's verses:
held-out fill-mask sentences, a labelled task), :mod:`.probe` (a linear probe on frozen
features), :mod:`.domains` (held-out loss of two domains, mixing them), :mod:`.book_shards`
(the sample texts' shards at T=512, for ``FULL_RUN``), :mod:`.timing` (one correct timing
loop) and :mod:`.notebook_setup` (the end of every notebook's setup cell).

Layer rule (``tests/test_architecture.py``): may import anything of the package; nothing
else in the package imports it.
"""
