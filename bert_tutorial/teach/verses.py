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

# A word: a run of letters not glued to an apostrophe ("LORD's" gives "LORD", not "s").
_WORD = re.compile(r"(?<![A-Za-z'])[A-Za-z]+(?![A-Za-z])")


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


def masked_words(corpus_path: PathLike, book: str, tokenizer: PreTrainedTokenizerBase,
                 verses: int) -> list[tuple[str, str]]:
    """Every word of the first ``verses`` verses of ``book``, masked one at a time.

    Returns (the verse with that one word replaced by ``[MASK]``, the word lowercased)
    pairs, in reading order. A word is skipped when the vocabulary splits it into several
    WordPieces (one ``[MASK]`` stands for one token), and so are numbers and the "s" of a
    possessive. Masking every word, not the ones a model might find easy, keeps the
    comparison of models fair.
    """
    found = []
    for verse in book_verses(corpus_path, book)[:verses]:
        for match in _WORD.finditer(verse):
            word = match.group(0).lower()
            if tokenizer.tokenize(word) == [word]:
                found.append((verse[: match.start()] + tokenizer.mask_token + verse[match.end():], word))
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
