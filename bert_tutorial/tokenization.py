"""Load a WordPiece tokenizer from a local ``vocab.txt``, and prove it really used it.

In transformers 5.x ``BertTokenizer(vocab_file=...)`` silently ignores the file and
builds a 5-token vocabulary, so every word becomes ``[UNK]``. That failure is
silent, so we pass the vocabulary itself (4.x, which has no such argument, reads the
file) and check the loaded vocabulary size against the file either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a tokenizer is loaded: transformers takes seconds to import
    from transformers import BertTokenizer


#: BERT's corruption of a chosen target: 80 % become [MASK], 10 % stay unchanged (the other
#: 10 % a random word piece). Shard creation and dynamic masking both draw by these shares.
MASK_SHARE = 0.8
KEEP_SHARE = 0.1


def masked_counts(lengths: Any, masked_lm_prob: float, max_predictions: int) -> Any:
    """How many targets BERT's rule gives sequences of ``lengths`` real tokens ([CLS]/[SEP]
    counted): ``round(length x masked_lm_prob)``, halves to even, at least 1, at most P.

    Shard creation (a shard's rows at once) and dynamic masking (one row, and its check of a
    shard's rate) count alike through this one function. An ``int64`` array (0-d for one).
    """
    import numpy as np  # here: `create_data --help` imports this module and needs no numpy

    wanted = np.rint(np.asarray(lengths) * masked_lm_prob)
    return np.minimum(max_predictions, np.maximum(1, wanted)).astype(np.int64)


#: The tokens BERT's inputs and masking need; a vocabulary without one of them is an error.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab(vocab_file: str | Path) -> dict[str, int]:
    """Token -> id, one token per line as in BERT's ``vocab.txt``."""
    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocabulary file not found")
    with path.open(encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def check_special_tokens(vocab: dict[str, int], vocab_file: str | Path) -> None:
    """A named error if ``vocab`` (read from ``vocab_file``) lacks one of :data:`SPECIAL_TOKENS`."""
    for special in SPECIAL_TOKENS:
        if special not in vocab:
            raise ValueError(f"{vocab_file}: vocabulary lacks the special token {special}")


def load_tokenizer(vocab_file: str | Path, do_lower_case: bool = True) -> BertTokenizer:
    """A ``BertTokenizer`` over exactly the tokens in ``vocab_file``."""
    from transformers import BertTokenizer

    vocab = read_vocab(vocab_file)
    try:  # transformers 5: a vocabulary dict (its vocab_file= may be silently ignored)
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=do_lower_case)
    except TypeError:  # transformers 4: no vocab= argument; vocab_file= works there
        tokenizer = BertTokenizer(vocab_file=str(vocab_file), do_lower_case=do_lower_case)
    if tokenizer.vocab_size != len(vocab):
        raise RuntimeError(
            f"{vocab_file}: tokenizer has {tokenizer.vocab_size} tokens but the file has {len(vocab)}"
        )
    check_special_tokens(vocab, vocab_file)
    return tokenizer


@dataclass(frozen=True)
class VocabInfo:
    """Special ids, which pieces continue a word, and which ids may replace a masked token.

    What masking needs to know of a vocabulary: shard creation and dynamic masking
    (:mod:`bert_tutorial.core.dynamic_masking`) read it from here, so both mask alike.
    """

    cls_id: int
    sep_id: int
    mask_id: int
    #: is_continuation[id] is True for "##" pieces (whole-word masking groups them with the word).
    is_continuation: list[bool]
    #: Ids a token may be replaced with in the 10 % "random" case. Unlike the original (which draws
    #: from the whole vocab) we exclude [PAD]/[CLS]/[SEP]/[MASK]/[UNK] and the [unusedN] slots: a
    #: replacement should look like real text, and [unusedN] embeddings are never trained otherwise.
    replacement_ids: list[int]

    @classmethod
    def from_vocab(cls, vocab: dict[str, int]) -> VocabInfo:
        """Build from a token -> id mapping (``tokenizer.get_vocab()``)."""
        tokens = [""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            tokens[index] = token
        special = re.compile(r"^\[.+\]$")
        return cls(
            cls_id=vocab["[CLS]"],
            sep_id=vocab["[SEP]"],
            mask_id=vocab["[MASK]"],
            is_continuation=[t.startswith("##") for t in tokens],
            replacement_ids=[i for i, t in enumerate(tokens) if t and not special.match(t)],
        )
