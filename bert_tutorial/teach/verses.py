"""The King James Bible sample as verses: held-out fill-mask sentences and a labelled task.

``data_samples/corpus/kjv-bible.txt`` holds one chapter per document (a blank line between
documents); a document's first line names the book and chapter ("Joshua 1", "1 Samuel 3"),
then one verse per line. Everything here is chosen by a fixed rule, never by hand, so the
notebook's examples are not picked to flatter a model.
"""

from __future__ import annotations

import re
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ..core.data import PathLike

#: The Old Testament's books end with Malachi; Matthew opens the New Testament.
NEW_TESTAMENT_FIRST = "Matthew"

# The last word of a verse: letters after a space (or the verse's start), then only punctuation.
_LAST_WORD = re.compile(r"(?:^|(?<=\s))([A-Za-z]+)([^\sA-Za-z0-9]+)$")


def read_books(corpus_path: PathLike) -> dict[str, list[str]]:
    """Book name -> its verses in order (all chapters), as in the file."""
    books: dict[str, list[str]] = {}
    for document in Path(corpus_path).read_text(encoding="utf-8").split("\n\n"):
        lines = [line.strip() for line in document.strip().splitlines() if line.strip()]
        if not lines:
            continue
        book, _, chapter = lines[0].rpartition(" ")
        if not book or not chapter.isdigit():
            raise ValueError(f"{corpus_path}: a document starts with {lines[0]!r}, not 'Book chapter'")
        books.setdefault(book, []).extend(lines[1:])
    return books


def book_verses(corpus_path: PathLike, book: str) -> list[str]:
    """The verses of one book, in order."""
    books = read_books(corpus_path)
    if book not in books:
        raise KeyError(f"no book {book!r} in {corpus_path}; it has {', '.join(books)}")
    return books[book]


def mask_last_word(verse: str, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str] | None:
    """(the verse with its last word replaced by ``[MASK]``, that word lowercased), or None.

    The last word is the last run of letters before the verse's final punctuation, after a
    space; None if the verse does not end that way (a possessive "LORD's." is skipped) or if
    the vocabulary splits the word into several WordPieces (one ``[MASK]``, one token).
    """
    match = _LAST_WORD.search(verse)
    if match is None:
        return None
    word = match.group(1).lower()
    if tokenizer.tokenize(word) != [word]:
        return None
    return verse[: match.start(1)] + tokenizer.mask_token + verse[match.end(1):], word


def masked_verses(corpus_path: PathLike, book: str, tokenizer: PreTrainedTokenizerBase,
                  n: int) -> list[tuple[str, str]]:
    """The first ``n`` verses of ``book`` whose last word can be masked (:func:`mask_last_word`).

    Returns (sentence with ``[MASK]``, the verse's word) pairs, in the book's order.
    """
    found = []
    for verse in book_verses(corpus_path, book):
        masked = mask_last_word(verse, tokenizer)
        if masked is not None:
            found.append(masked)
            if len(found) == n:
                break
    return found


def spread(items: list[str], n: int) -> list[str]:
    """``n`` items evenly spread over ``items`` (every k-th, k = len / n), in order."""
    if n > len(items):
        raise ValueError(f"{n} items asked of {len(items)}")
    return [items[i * len(items) // n] for i in range(n)]


def testament_task(corpus_path: PathLike, old_books: list[str], new_books: list[str],
                   per_book: int) -> tuple[list[str], list[int]]:
    """Verses labelled 0 (Old Testament) or 1 (New Testament): ``per_book`` verses of each
    book, evenly spread over it (:func:`spread`); balanced when both lists have as many books.
    """
    books = read_books(corpus_path)
    names = list(books)
    first_new = names.index(NEW_TESTAMENT_FIRST)
    verses, labels = [], []
    for label, chosen in ((0, old_books), (1, new_books)):
        for book in chosen:
            if book not in books:
                raise KeyError(f"no book {book!r} in {corpus_path}")
            if (names.index(book) >= first_new) != bool(label):
                raise ValueError(f"{book} is not in the {'New' if label else 'Old'} Testament")
            verses += spread(books[book], per_book)
            labels += [label] * per_book
    return verses, labels
