"""Caption checks: present, non-empty, valid UTF-8, not shared too widely, not too long.

Captions are read as bytes so a bad one can be named by file and byte offset. A UTF-8 byte
order mark and CRLF line ends are cleaned (MindSpeed-MM would keep the BOM in the prompt).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cogvideo_cli.data.rules import Reason

BOM = b"\xef\xbb\xbf"
_TO_UTF8 = "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT"


@dataclass
class Caption:
    """A caption as read: its text (or None), the problem that rejects it, notes."""

    text: str | list[str] | None = None
    problem: Reason | None = None
    notes: list[Reason] = field(default_factory=list)


def _clean(text: str) -> str:
    """One line of prompt: CR and newlines become spaces, ends stripped."""
    return " ".join(text.replace("\r", "\n").split("\n")).strip()


def decode_caption(raw: bytes, where: str) -> Caption:
    """Decode caption bytes strictly as UTF-8, naming the byte offset of any bad byte.

    Args:
        raw: the bytes of a caption file or one line of ``prompt.txt``.
        where: how to name the origin in messages (a path, or ``prompt.txt:12``).
    """
    notes = []
    offset = 0
    if raw.startswith(BOM):
        raw, offset = raw[len(BOM):], len(BOM)
        notes.append(Reason("caption_bom", f"{where} starts with a UTF-8 byte order mark; "
                            "it was removed"))
    if b"\r" in raw:
        notes.append(Reason("caption_crlf", f"{where} has CR line ends; they were removed"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1].hex()
        return Caption(problem=Reason(
            "caption_not_utf8",
            f"{where} is not valid UTF-8: byte 0x{bad} at offset {exc.start + offset}",
            _TO_UTF8), notes=notes)
    text = _clean(text)
    if not text:
        return Caption(problem=Reason("caption_empty", f"{where} is empty",
                                      "write the caption into it, or drop the video"),
                       notes=notes)
    return Caption(text=text, notes=notes)


def read_caption_file(path: Path, display: str) -> Caption:
    """A caption file beside or matching a video; a missing file is a problem, not an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Caption(problem=Reason("caption_missing", f"no caption file {display}",
                                      f"write the caption into {display}, or drop the video"))
    except OSError as exc:
        return Caption(problem=Reason("caption_missing", f"cannot read {display}: {exc}",
                                      "check the file's permissions"))
    return decode_caption(raw, display)


def check_caption_value(value: object, where: str) -> Caption:
    """A caption from data.jsonl / csv: a non-empty string or a list of them."""
    if isinstance(value, str):
        return decode_caption(value.encode("utf-8", "surrogatepass"), where)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        cleaned = [_clean(v) for v in value]
        if all(cleaned):
            return Caption(text=cleaned)
        return Caption(problem=Reason("caption_empty", f"{where} has an empty caption in "
                                      "its list", "remove the empty entries"))
    if value is None or value == "" or value == []:
        return Caption(problem=Reason("caption_missing", f"{where} has no captions",
                                      'add a "captions" string'))
    return Caption(problem=Reason(
        "caption_type", f"{where}: captions must be a string or a list of strings, not "
        f"{type(value).__name__}", 'write "captions" as a JSON string'))


def duplicate_counts(captions: Sequence[str | list[str] | None]) -> Counter:
    """How many videos share each caption text (lists count by their first entry)."""
    keys = [c[0] if isinstance(c, list) else c for c in captions if c]
    return Counter(keys)


def length_warning(text: str | list[str], count_tokens: Callable[[str], int],
                   limit: int) -> Reason | None:
    """A warning when the caption has more tokens than the text encoder keeps."""
    texts = text if isinstance(text, list) else [text]
    longest = max(count_tokens(t) for t in texts)
    if longest > limit:
        return Reason("caption_too_long", f"the caption has {longest} tokens; the text "
                      f"encoder keeps {limit} and drops the rest", "shorten the caption")
    return None


def token_counter(folder: Path) -> Callable[[str], int]:
    """Count a caption's tokens with the T5 tokenizer in ``folder`` (transformers).

    Raises:
        DataError: the tokenizer cannot be loaded.
    """
    from cogvideo_cli.core.errors import DataError

    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise DataError(f"cannot load the tokenizer in {folder}: {exc}", value=folder,
                        fix="pass --tokenizer with a T5 tokenizer folder, or fetch the "
                            "weights with cogvx download") from exc
    return lambda text: len(tokenizer(text)["input_ids"])
