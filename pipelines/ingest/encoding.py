"""The encoding of a whole delivery: surveyed line by line, and a marked UTF-8 copy of a mixed one.

A delivery's head gives a first guess (:func:`pipelines.ingest.reader.sniff`). When
reading meets bytes the guess cannot decode, or a head is not UTF-8, every line of the
file votes for the encoding it reads in (:func:`survey_encoding`). A file whose lines
disagree is copied as UTF-8 with :data:`UNDECODABLE` where its bad bytes were
(:func:`transcode`), so only the rows of those lines go to quarantine as
``bad_encoding`` and the rest of the file goes in.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from pipelines.ingest.reader import open_binary, reading

# Stands where undecodable bytes were in a transcoded file: a Unicode noncharacter, so
# no real text carries it, and a row holding it is quarantined as ``bad_encoding``.
UNDECODABLE = "\uffff"
_MARK_ERRORS = "churn.undecodable"


def _mark_undecodable(e: UnicodeError) -> tuple[str, int]:
    """Decode error handler: the marker, then the bad bytes as ``\\xNN`` (as backslashreplace)."""
    if not isinstance(e, UnicodeDecodeError):
        raise e
    bad = e.object[e.start : e.end]
    return UNDECODABLE + "".join(f"\\x{b:02x}" for b in bad), e.end


codecs.register_error(_MARK_ERRORS, _mark_undecodable)


def _line_blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The (decompressed) file in blocks of about ``size`` bytes that end at a line break.

    UTF-8 and GB18030 never use the byte of a line break inside a character, so each
    block decodes on its own.
    """
    with open_binary(path) as f:
        tail = b""
        while True:
            block = f.read(size)
            if not block:
                if tail:
                    yield tail
                return
            block = tail + block
            cut = block.rfind(b"\n") + 1 or block.rfind(b"\r") + 1
            if cut == 0:
                tail = block  # no line break yet: a very long line
                continue
            tail = block[cut:]
            yield block[:cut]


_NON_ASCII_LINE = re.compile(rb"^[^\n]*[\x80-\xff][^\n]*", re.MULTILINE)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _plausible_chinese() -> frozenset[str]:
    """GB2312's punctuation rows and its 3,755 common hanzi: what real Chinese text is made of."""
    out = set()
    for lead in (*range(0xA1, 0xA4), *range(0xB0, 0xD8)):
        for trail in range(0xA1, 0xFF):
            with suppress(UnicodeDecodeError):  # a few unassigned codes
                out.add(bytes((lead, trail)).decode("gb2312"))
    return frozenset(out)


_PLAUSIBLE = _plausible_chinese()


def _plausibility(text: str) -> float:
    chars = [c for c in text if c > "\x7f"]
    return sum(c in _PLAUSIBLE for c in chars) / len(chars) if chars else 0.0


def _more_plausible(line: bytes, candidates: tuple[str, str]) -> str:
    """Of two encodings a line is valid in, the one whose reading looks like Chinese text.

    UTF-8 Chinese often also decodes, as nonsense, in GB18030, and short GBK text is
    sometimes valid UTF-8; the wrong reading is mostly rare characters. A tie goes to
    the first (UTF-8).
    """
    a, b = (_plausibility(line.decode(c)) for c in candidates)
    return candidates[0] if a >= b else candidates[1]


def _block_votes(block: bytes, candidates: tuple[str, ...]) -> Iterator[tuple[re.Match, str, bool]]:
    """(line, encoding it reads in or "none", valid UTF-8?) of every non-ASCII line of a block.

    A block valid as UTF-8 throughout is a UTF-8 stretch of the file: its lines are
    UTF-8 without a look at each. Otherwise a line valid in one candidate is that
    one's, one valid in both goes to :func:`_more_plausible`.
    """
    lines = _NON_ASCII_LINE.finditer(block)
    if len(candidates) == 1:
        (only,) = candidates
        for m in lines:
            yield m, only if _decodes(m.group(), only) else "none", only == "utf-8"
        return
    utf8, legacy = candidates
    if _decodes(block, utf8):
        for m in lines:
            yield m, utf8, True
        return
    legacy_block = _decodes(block, legacy)  # the usual GBK block: no line need be decoded twice
    for m in lines:
        line = m.group()
        if not _decodes(line, utf8):
            yield m, legacy if legacy_block or _decodes(line, legacy) else "none", False
        elif legacy_block or _decodes(line, legacy):
            yield m, _more_plausible(line, (utf8, legacy)), True
        else:
            yield m, utf8, True


def _utf8_lines_of_legacy_block(block: bytes) -> tuple[int, list[bytes]]:
    """(non-ASCII lines, those of them valid UTF-8) of a block valid in GB18030 but not UTF-8.

    Decoded with replacement, a line without U+FFFD was valid UTF-8 (a line that
    really holds U+FFFD counts as GB18030: a vote, not a decoding). Cheap enough to
    run on every GBK delivery: one decode of the block, no line decoded twice.
    """
    n = sum(not line.isascii() for line in block.split(b"\n"))
    text = block.decode("utf-8", "replace")
    return n, [t.encode("utf-8") for t in text.split("\n") if not t.isascii() and "\ufffd" not in t]


@dataclass(frozen=True)
class EncodingChoice:
    """What a whole-file survey found: the encoding to read, and how many lines are not read in it."""

    encoding: str
    bad_lines: int
    votes: dict[str, int]  # non-ASCII lines read in each candidate, or in "none"
    candidates: tuple[str, ...]

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.votes.items()))
        return f"{self.encoding} (non-ASCII lines by encoding: {counts or 'none'})"


def survey_encoding(
    path: Path, candidates: tuple[str, ...], *, trust_legacy: bool = False
) -> EncodingChoice:
    """Decide a file's encoding from every line of it, not its head.

    Each non-ASCII line votes for the encoding it reads in (:func:`_block_votes`). With
    one candidate (a configured encoding) that is the encoding, and lines not valid in
    it are bad. With UTF-8 and GB18030 the majority wins, UTF-8 on a tie. Counting lines
    that merely decode would not do: most UTF-8 Chinese also decodes, as nonsense, in
    GB18030. Bad lines, whose rows go to quarantine as ``bad_encoding``: in a UTF-8
    file the invalid ones (valid UTF-8 is never second-guessed), in a GB18030 file
    those that do not read as GB18030.

    ``trust_legacy`` skips checking GB18030 validity (pyarrow checks it while reading):
    enough to find UTF-8 lines in a file whose head is GBK, at about half the cost.
    """
    votes: Counter[str] = Counter()
    invalid_utf8 = 0
    with reading():
        for block in _line_blocks(path):
            if block.isascii() or (len(candidates) == 1 and _decodes(block, candidates[0])):
                continue  # (a configured encoding: only its invalid lines need finding)
            if len(candidates) == 2 and _decodes(block, candidates[0]):
                votes[candidates[0]] += len(_NON_ASCII_LINE.findall(block))
                continue
            if len(candidates) == 2 and (trust_legacy or _decodes(block, candidates[1])):
                n, maybe_utf8 = _utf8_lines_of_legacy_block(block)
                for line in maybe_utf8:
                    votes[_more_plausible(line, candidates)] += 1
                votes[candidates[1]] += n - len(maybe_utf8)
                invalid_utf8 += n - len(maybe_utf8)
                continue
            for _, vote, utf8 in _block_votes(block, candidates):
                votes[vote] += 1
                invalid_utf8 += not utf8
    if len(candidates) == 1:
        chosen = candidates[0]
    else:
        chosen = candidates[0] if votes[candidates[0]] >= votes[candidates[1]] else candidates[1]
    not_read = sum(n for k, n in votes.items() if k != chosen)
    bad = invalid_utf8 if chosen == "utf-8" else not_read
    return EncodingChoice(chosen, bad, dict(votes), candidates)


def transcode(path: Path, dest: Path, choice: EncodingChoice) -> None:
    """Copy a delivery to ``dest`` as UTF-8, with :data:`UNDECODABLE` in every line it does not read.

    Bytes not valid in the chosen encoding are replaced by the marker and their
    ``\\xNN`` escapes; a line that reads as the other encoding is kept in that reading
    with the marker in front of its first non-ASCII character. Line breaks, delimiters
    and quotes are ASCII and stay as they were, so the copy has exactly the original's
    rows and line numbers, and only the rows holding a marker are quarantined.
    """
    enc, cands = choice.encoding, choice.candidates

    def line(raw: bytes, vote: str, utf8: bool) -> bytes:
        if vote == enc:
            return raw.decode(enc).encode("utf-8")
        if not utf8:
            return raw.decode(enc, _MARK_ERRORS).encode("utf-8")
        text = raw.decode("utf-8")  # a UTF-8 line in a GB18030 file: shown as it reads
        first = next(i for i, ch in enumerate(text) if ch > "\x7f")
        return (text[:first] + UNDECODABLE + text[first:]).encode("utf-8")

    with reading(), open(dest, "wb") as out:
        for block in _line_blocks(path):
            if block.isascii() or (enc == "utf-8" and _decodes(block, "utf-8")):
                out.write(block)  # valid UTF-8 is never second-guessed
            elif enc == "utf-8" or len(cands) == 1:
                out.write(block.decode(enc, _MARK_ERRORS).encode("utf-8"))
            else:
                pos, pieces = 0, []
                for m, vote, utf8 in _block_votes(block, cands):
                    pieces += [block[pos : m.start()], line(m.group(), vote, utf8)]
                    pos = m.end()
                pieces.append(block[pos:])
                out.write(b"".join(pieces))
