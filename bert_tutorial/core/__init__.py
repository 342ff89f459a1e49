"""The method: what a learner reads to understand one step of BERT pre-training.

* :mod:`.data` - the HDF5 shards as a lazy ``Dataset``, the MLM labels, a shard-blocked
  reproducible sampler (rank-aware for DDP) and the ``DataLoader``;
* :mod:`.model` - ``BertForPreTraining`` with the masked-only MLM head and the MLM + NSP loss;
* :mod:`.optim` - AdamW without decay on biases and LayerNorm, linear warmup and decay;
* :mod:`.step` - one optimizer step: accumulation, the loss normalised over the global
  batch, clipping, skipping a non-finite update;
* :mod:`.evaluation` - MLM loss and accuracy over all masked tokens, NSP accuracy,
  perplexity, and the no-context frequency baseline.

Layer rule (``tests/test_architecture.py``): these modules import each other and the
contracts at the package's top (``config``, ``hdf5_format``, ``tokenization``,
``safe_io``, ``warn``), nothing else of the package. Speed tricks that are not the method (the
fused optimizer's on-device skip, the prepared attention mask, worker signal handling)
live in :mod:`bert_tutorial.pretrain` and are passed in as arguments.
"""
