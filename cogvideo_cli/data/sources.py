"""The four kinds of SOURCE prepare-data reads, each turned into the same list of entries.

- ``videos-labels``: a folder with ``videos/`` and ``labels/`` whose files share names
  (``videos/1.mp4`` and ``labels/1.txt``), the layout MindSpeed-MM documents;
- ``disney``: ``prompt.txt`` and ``videos.txt``, one entry per line, paired by line;
- ``captioned-folder``: videos with a caption ``.txt`` of the same name beside each;
- ``jsonl`` / ``csv``: an existing data file (``{"file": ..., "captions": ...}`` rows) to
  check again.

An entry's ``file`` is what data.jsonl will hold: the path relative to the data folder.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cogvideo_cli.core.errors import DataError, UsageError, plural
from cogvideo_cli.data.captions import Caption, check_caption_value, decode_caption
from cogvideo_cli.data.captions import read_caption_file
from cogvideo_cli.data.rules import VIDEO_EXTENSIONS, Reason

LAYOUTS_FIX = ("pass a folder with videos/ and labels/, a folder with prompt.txt and "
               "videos.txt, a folder of videos each with a .txt caption beside it, or a "
               "data.jsonl / .csv file")


@dataclass
class Entry:
    """One video row of a source."""

    index: int
    file: str
    path: Path
    where: str
    caption: Caption
    problems: list[Reason] = field(default_factory=list)


@dataclass
class Source:
    """A dataset as found: its kind, the folder its files are relative to, its entries."""

    kind: str
    path: Path
    data_folder: Path
    entries: list[Entry]
    notes: list[str] = field(default_factory=list)


def _natural_key(name: str) -> list:
    """Sort ``2.mp4`` before ``10.mp4``."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", name)]


def _videos_in(folder: Path) -> list[Path]:
    """Video files (by MindSpeed-MM's extensions) directly in ``folder``, naturally sorted."""
    found = [p for p in folder.iterdir()
             if p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_dir()]
    return sorted(found, key=lambda p: _natural_key(p.name))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _videos_labels(root: Path) -> Source:
    videos, labels = root / "videos", root / "labels"
    entries = []
    for number, video in enumerate(_videos_in(videos)):
        label = labels / (video.stem + ".txt")
        caption = read_caption_file(label, _rel(label, root))
        entries.append(Entry(number, _rel(video, root), video, _rel(video, root), caption))
    stems = {Path(e.file).stem for e in entries}
    orphans = sorted(p.name for p in labels.glob("*.txt") if p.stem not in stems)
    notes = [f"{len(orphans)} caption file(s) in labels/ have no video, e.g. {orphans[0]}"
             ] if orphans else []
    return Source("videos-labels", root, root, entries, notes)


def _captioned_folder(root: Path) -> Source:
    entries = []
    for number, video in enumerate(_videos_in(root)):
        label = video.with_suffix(".txt")
        caption = read_caption_file(label, _rel(label, root))
        entries.append(Entry(number, _rel(video, root), video, _rel(video, root), caption))
    return Source("captioned-folder", root, root, entries)


def _lines(path: Path) -> list[bytes]:
    """Lines of a text file as bytes, without line ends; trailing blank lines dropped."""
    lines = path.read_bytes().split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _disney(root: Path) -> Source:
    prompts, videos = _lines(root / "prompt.txt"), _lines(root / "videos.txt")
    if len(prompts) != len(videos):
        raise DataError(
            f"prompt.txt has {plural(len(prompts), 'line')} but videos.txt has "
            f"{len(videos)}; they pair by line, so every pair after the first missing line "
            "would be wrong (MindSpeed-MM's convert script silently drops the extra lines)",
            value=root, fix="make both files list the same videos in the same order, one "
                            "per line")
    entries = []
    for number, (prompt, video) in enumerate(zip(prompts, videos)):
        where = f"videos.txt:{number + 1}"
        caption = decode_caption(prompt, f"prompt.txt:{number + 1}")
        name = video.decode("utf-8", "replace").strip().lstrip("\ufeff")
        entry = Entry(number, name, root / name, where, caption)
        if not name:
            entry.problems.append(Reason("video_missing", f"{where} is blank",
                                         "remove the line from both files"))
        entries.append(entry)
    return Source("disney", root, root, entries)


def _jsonl_rows(path: Path) -> list[tuple[str, object]]:
    """(where, row) for each line of a .jsonl, or each element of a .json list."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise DataError(f"{path} holds a JSON {type(rows).__name__}, not a list of rows",
                            fix="write one {\"file\", \"captions\"} object per line (.jsonl)")
        return [(f"{path.name}[{i}]", row) for i, row in enumerate(rows)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((f"{path.name}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((f"{path.name}:{number}", f"not JSON: {exc.msg}"))
    return rows


def _csv_rows(path: Path) -> list[tuple[str, object]]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    return [(f"{path.name}:{number}", row) for number, row in enumerate(reader, start=2)]


def _table_entry(number: int, where: str, row: object, folder: Path) -> Entry:
    if not isinstance(row, dict):
        what = row if isinstance(row, str) else "not a JSON object"
        problem = Reason("bad_row", f"{where}: {what}", 'write {"file": ..., "captions": ...}')
        return Entry(number, "", folder, where, Caption(), [problem])
    name = str(row.get("file") or "").strip()
    entry = Entry(number, name, folder / name, where,
                  check_caption_value(row.get("captions"), where))
    if not name:
        entry.problems.append(Reason("video_missing", f'{where} has no "file"',
                                     'add the video path as "file"'))
    return entry


def _recorded_folder(path: Path) -> Path | None:
    """The data folder a prepare-data ``report.json`` beside ``path`` recorded, if any.

    A data.jsonl that prepare-data wrote holds paths relative to the original dataset,
    not to its own folder, so checking it again must start from there.
    """
    report = path.parent / "report.json"
    try:
        recorded = json.loads(report.read_text(encoding="utf-8"))["data_folder"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folder = Path(recorded)
    return folder if folder.is_dir() else None


def _table(path: Path, data_folder: Path | None) -> Source:
    try:
        rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 (byte {exc.start})", value=path,
                        fix="re-save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}", value=path,
                        fix="repair the file") from exc
    folder = Path(data_folder or _recorded_folder(path) or path.parent).absolute()
    entries = [_table_entry(n, where, row, folder) for n, (where, row) in enumerate(rows)]
    kind = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    return Source(kind, path, folder, entries)


def _folder_kind(root: Path) -> str:
    has = {name: (root / name).exists() for name in ("prompt.txt", "videos.txt")}
    if all(has.values()):
        return "disney"
    if any(has.values()):
        present, absent = sorted(k for k, v in has.items() if v), sorted(
            k for k, v in has.items() if not v)
        raise UsageError(f"{root} has {present[0]} but no {absent[0]}", value=root,
                         fix="put both prompt.txt and videos.txt there (one line per video)")
    if (root / "videos").is_dir() and (root / "labels").is_dir():
        return "videos-labels"
    if _videos_in(root):
        return "captioned-folder"
    raise UsageError(f"no videos found in {root}", value=root, fix=LAYOUTS_FIX)


def open_source(path: Path, data_folder: Path | None = None) -> Source:
    """Recognise SOURCE and list its entries with their captions already checked.

    Args:
        path: a dataset folder, or a ``.jsonl`` / ``.json`` / ``.csv`` data file.
        data_folder: for a data file, the folder its ``file`` entries are relative to
            (default: the file's folder).

    Raises:
        UsageError: SOURCE does not exist or is no known layout.
        DataError: the layout is broken as a whole (e.g. prompt.txt / videos.txt lengths).
    """
    path = Path(path).absolute()
    if not path.exists():
        raise UsageError(f"SOURCE {path} does not exist", value=path, fix=LAYOUTS_FIX)
    if path.is_file():
        if path.suffix.lower() in (".jsonl", ".json", ".csv"):
            return _table(path, data_folder)
        if path.name in ("prompt.txt", "videos.txt"):
            return _disney(path.parent)
        raise UsageError(f"SOURCE {path} is not a folder or a .jsonl / .csv file",
                         value=path, fix=LAYOUTS_FIX)
    if data_folder is not None:
        raise UsageError("--data-folder only applies to a .jsonl / .csv SOURCE",
                         value=data_folder, fix="drop --data-folder")
    kind = _folder_kind(path)
    return {"disney": _disney, "videos-labels": _videos_labels,
            "captioned-folder": _captioned_folder}[kind](path)
