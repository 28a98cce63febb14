"""``cogvx-download.json``: how a weights folder was made, and checking files against it.

The record sits in the weights folder and lists every file with its size and SHA-256 as
verified when it arrived (for hub files that is the hub's own SHA-256), where it came
from, and the variant, format and sources of the run. ``--verify-only`` rereads every file
against it without the network; a later download trusts a file whose size and
modification time still match its entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import DownloadError
from cogvideo_cli.core.fsutil import write_text_atomic

RECORD_NAME = "cogvx-download.json"
SCRATCH_NAME = ".cogvx-download"
_BLOCK = 1 << 20


@dataclass
class Digest:
    """What a file is: its size and checksums."""

    size: int
    sha256: str
    git_sha1: str | None = None


def digest_file(path: Path, git_sha1: bool = False,
                on_bytes: Callable[[int], None] = lambda n: None) -> Digest:
    """SHA-256 of a file and, on request, its git blob id (the hub's id for small files)."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode()) if git_sha1 else None
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            sha256.update(block)
            if sha1 is not None:
                sha1.update(block)
            on_bytes(len(block))
    return Digest(size=size, sha256=sha256.hexdigest(),
                  git_sha1=sha1.hexdigest() if sha1 is not None else None)


@dataclass
class Record:
    """The parsed ``cogvx-download.json`` of one weights folder."""

    root: Path
    meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / RECORD_NAME

    @classmethod
    def load(cls, root: Path) -> Record:
        """Read the record of ``root``; an absent record is an empty one."""
        path = root / RECORD_NAME
        if not path.exists():
            return cls(root=root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = dict(data.pop("files"))
        except (ValueError, KeyError, TypeError) as exc:
            raise DownloadError(f"{path} is damaged: {exc}",
                                fix=f"delete {path}; the next download rechecks every file"
                                ) from exc
        return cls(root=root, meta=data, files=files)

    def note_file(self, dest: str, digest: Digest, source: str, check: str) -> None:
        """Remember a verified file, with the stat that lets a later run trust it."""
        stat = (self.root / dest).stat()
        entry = {"size": digest.size, "sha256": digest.sha256, "check": check,
                 "source": source, "mtime_ns": stat.st_mtime_ns}
        if digest.git_sha1:
            entry["git_sha1"] = digest.git_sha1
        self.files[dest] = entry

    def unchanged(self, dest: str) -> bool:
        """True when the file's size and modification time are as recorded."""
        entry = self.files.get(dest)
        try:
            stat = (self.root / dest).stat()
        except OSError:
            return False
        return bool(entry) and stat.st_size == entry.get("size") and \
            stat.st_mtime_ns == entry.get("mtime_ns")

    def save(self) -> None:
        """Write the record atomically (after every file, so a killed run keeps it)."""
        data = dict(self.meta)
        data["files"] = dict(sorted(self.files.items()))
        write_text_atomic(self.path, json.dumps(data, indent=2) + "\n")


@dataclass
class FileCheck:
    """The verdict on one file of a weights folder."""

    dest: str
    ok: bool
    reason: str = ""
    size: int | None = None


def verify_recorded(record: Record,
                    on_bytes: Callable[[int], None] = lambda n: None) -> list[FileCheck]:
    """Reread every recorded file and compare it with its recorded SHA-256 (no network)."""
    results = []
    for dest, entry in sorted(record.files.items()):
        path = record.root / dest
        if not path.is_file():
            results.append(FileCheck(dest, False, "missing"))
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            results.append(FileCheck(dest, False, f"{size} bytes, expected {entry.get('size')}",
                                     size))
            continue
        got = digest_file(path, on_bytes=on_bytes)
        ok = got.sha256 == entry.get("sha256")
        reason = "" if ok else f"SHA-256 {got.sha256[:16]}…, expected {entry['sha256'][:16]}…"
        results.append(FileCheck(dest, ok, reason, size))
    return results


def remove_quietly(*paths: Path) -> None:
    """Delete files that may or may not exist."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
