"""BERT's WordPiece tokenizer for ``create_data``, built without transformers, and faster.

transformers' ``BertTokenizer`` (5.x; ``BertTokenizerFast`` in 4.x) is a wrapper around
a ``tokenizers.Tokenizer`` made of a ``BertNormalizer``, a ``BertPreTokenizer``, a
``WordPiece`` model and the five special tokens. Building that object here gives the
same token ids without importing transformers, which takes about 6 s of a small run's
8 s; importing ``tokenizers`` takes 15 ms.

Speed: most English sentences are pure ASCII and hold no "[" (so no special token
such as "[SEP]"). For them every step reduces to a few lines of Python: the
normalizer drops ASCII control characters, turns tab/newline/return into spaces and
(uncased) lower-cases; the pre-tokenizer splits at spaces and makes every other
non-alphanumeric character (all ASCII punctuation) a word of its own; WordPiece
splits each word greedily into the longest vocabulary pieces, and a word is looked
up once and then cached (text repeats its words, so almost every look-up is a hit).
That is about 4x faster than ``tokenizers`` on one core. Every other sentence goes
through the ``tokenizers`` object. ``tests/test_create_equivalence.py`` compares both
with transformers' tokenizer on the sample book, odd text and random ASCII strings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..tokenization import SPECIAL_TOKENS, check_special_tokens, read_vocab

#: ASCII control characters are deleted, tab/newline/return become spaces (BertNormalizer's
#: clean_text restricted to ASCII).
_ASCII_CLEAN = {c: None for c in [*range(32), 127]} | {9: " ", 10: " ", 13: " "}
#: BertPreTokenizer on cleaned ASCII: runs of letters and digits, and every other non-space
#: character alone (in ASCII all of them are punctuation to BERT).
_ASCII_WORDS = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9 ]")
#: Longest word WordPiece splits (longer ones are [UNK]), as in transformers.
MAX_WORD_CHARS = 100
#: Words whose pieces are remembered; the cache is emptied when it holds this many (~30 MB).
CACHE_WORDS = 200_000


def _build(vocab: dict[str, int], do_lower_case: bool) -> Any:
    """The ``tokenizers.Tokenizer`` that transformers' ``BertTokenizer`` wraps, less the parts
    encoding without special tokens never uses (post-processor, decoder)."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tokenizer


class WordPieceTokenizer:
    """Sentences -> lists of word-piece ids, as ``BertTokenizer(..., add_special_tokens=False)``."""

    def __init__(self, vocab: dict[str, int], do_lower_case: bool = True) -> None:
        """Build the tokenizer over ``vocab`` (token -> id); lower-case text first if asked."""
        self.vocab = vocab
        self.do_lower_case = do_lower_case
        #: normalizer + pre-tokenizer + WordPiece: ids without [CLS]/[SEP], for encoding only.
        self.tokenizer = _build(vocab, do_lower_case)
        #: ``encode_batch_fast`` skips the offsets (tokenizers >= 0.21).
        self._encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        self._unk = vocab["[UNK]"]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, vocab_file: str | Path, do_lower_case: bool = True) -> WordPieceTokenizer:
        """Load ``vocab.txt``; a missing file or a missing special token is a named error."""
        vocab = read_vocab(vocab_file)
        check_special_tokens(vocab, vocab_file)
        return cls(vocab, do_lower_case)

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, as ``BertTokenizer.get_vocab()``."""
        return dict(self.vocab)

    def __call__(self, sentences: list[str]) -> list[list[int]]:
        """The ids of each sentence (no [CLS]/[SEP] added)."""
        plain = [s.isascii() and "[" not in s for s in sentences]
        others = [s for s, ok in zip(sentences, plain, strict=True) if not ok]
        encoded = iter(self._encode_batch(others, add_special_tokens=False) if others else [])
        return [self._encode_ascii(s) if ok else next(encoded).ids
                for s, ok in zip(sentences, plain, strict=True)]

    def words(self, sentences: list[str]) -> list[tuple[str, list[int]]]:
        """Every word of ``sentences`` and its piece ids, in order: all the pieces together are
        the ids :meth:`__call__` gives (for ``create_data --report``, :mod:`.report`).

        A word is what BERT's pre-tokenizer makes: a run of letters and digits, or one
        punctuation mark. It is lower-cased if the tokenizer is; one from a sentence that
        goes through ``tokenizers`` (non-ASCII, or holding "[") is the text it was made
        from, so it keeps its accents.
        """
        plain = [s.isascii() and "[" not in s for s in sentences]
        others = [s for s, ok in zip(sentences, plain, strict=True) if not ok]
        # encode_batch, not _encode_batch (encode_batch_fast): the words need the offsets
        encoded = iter(self.tokenizer.encode_batch(others, add_special_tokens=False) if others else [])
        words: list[tuple[str, list[int]]] = []
        cache = self._cache
        for sentence, ok in zip(sentences, plain, strict=True):
            if not ok:
                words += self._encoded_words(sentence, next(encoded))
                continue
            text = sentence.translate(_ASCII_CLEAN)
            for word in _ASCII_WORDS.findall(text.lower() if self.do_lower_case else text):
                pieces = cache.get(word)
                if pieces is None:
                    if len(cache) >= CACHE_WORDS:
                        cache.clear()
                    pieces = cache[word] = self._word_pieces(word)
                words.append((word, pieces))
        return words

    def _encoded_words(self, sentence: str, encoding: Any) -> list[tuple[str, list[int]]]:
        """The words of a sentence ``tokenizers`` encoded: its pieces grouped by word."""
        spans: list[tuple[int, int, list[int]]] = []  # (start, end) in the sentence, piece ids
        previous = None
        for index, word, (start, end) in zip(encoding.ids, encoding.word_ids, encoding.offsets,
                                             strict=True):
            if word is not None and word == previous:  # a "##" piece of the word before
                spans[-1] = (spans[-1][0], end, [*spans[-1][2], index])
            else:
                spans.append((start, end, [index]))
            previous = word
        lower = str.lower if self.do_lower_case else str
        return [(lower(sentence[start:end]), pieces) for start, end, pieces in spans]

    def _encode_ascii(self, sentence: str) -> list[int]:
        """The ids of an ASCII sentence without "[" (see the module docstring)."""
        text = sentence.translate(_ASCII_CLEAN)
        if self.do_lower_case:
            text = text.lower()
        cache = self._cache
        ids: list[int] = []
        for word in _ASCII_WORDS.findall(text):
            pieces = cache.get(word)
            if pieces is None:
                if len(cache) >= CACHE_WORDS:
                    cache.clear()
                pieces = cache[word] = self._word_pieces(word)
            ids += pieces
        return ids

    def _word_pieces(self, word: str) -> list[int]:
        """WordPiece: longest vocabulary prefix first, "##" before inner pieces, [UNK] if stuck."""
        if len(word) > MAX_WORD_CHARS:
            return [self._unk]
        vocab, pieces, start = self.vocab, [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = vocab.get(word[start:end] if start == 0 else "##" + word[start:end])
                if piece is not None:
                    break
            else:
                return [self._unk]
            pieces.append(piece)
            start = end
        return pieces

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its vocabulary (worker processes rebuild the tokenizer)."""
        return {"vocab": self.vocab, "do_lower_case": self.do_lower_case}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["vocab"], state["do_lower_case"])  # type: ignore[misc]

