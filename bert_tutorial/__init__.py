"""Companion package of the BERT pre-training tutorial (MLM + NSP on HDF5 shards).

The notebooks in ``notebooks/`` import from here; everything a notebook does is
implemented and tested in this package.
"""

__version__ = "0.1.0"
