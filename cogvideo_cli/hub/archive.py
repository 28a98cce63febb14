"""Safe reading of the cloud shares' zip files: no entry may leave the target, no links.

The whole archive is checked before anything is extracted: one hostile entry (an absolute
path, a ``..`` part, a drive letter, a symbolic or hard link) refuses the archive. Members
are streamed out through ``zipfile``, which checks each one's CRC-32.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from cogvideo_cli.core.errors import DownloadError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a '..' part that leaves the target folder"
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip stores no file type
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "a special file (device, pipe or socket)"
    return None


def check_archive(path: Path, source: str) -> list[str]:
    """Open ``path`` as a zip, refuse it if any entry is unsafe; return the file names."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"the download from {source} is not a readable zip: {exc}",
                            fix="rerun the command to fetch it again") from exc
    for info in infos:
        reason = _unsafe_reason(info)
        if reason:
            raise DownloadError(
                f"the zip from {source} has an entry with {reason}; nothing was extracted",
                value=info.filename,
                fix="do not use this archive; check that the link is the official one")
    return [i.filename for i in infos if not i.is_dir()]


def find_member(names: list[str], wanted: str, source: str) -> str:
    """The one entry whose path ends with ``wanted`` (the top folder is not fixed)."""
    tail = PurePosixPath(wanted).parts
    hits = [n for n in names
            if PurePosixPath(n.replace("\\", "/")).parts[-len(tail):] == tail]
    if len(hits) != 1:
        found = ", ".join(names[:8]) or "nothing"
        raise DownloadError(
            f"the zip from {source} has {len(hits)} entries named {wanted}, expected one",
            value=found, fix="the archive changed; report it so cogvx can follow")
    return hits[0]


def extract_member(archive_path: Path, member: str, out: Path,
                   on_bytes: Callable[[int], None] = lambda n: None) -> int:
    """Stream one member to ``out`` (a temporary name the caller renames); return its size.

    Raises:
        DownloadError: the member's CRC-32 does not match (a damaged archive).
    """
    copied = 0
    try:
        with zipfile.ZipFile(archive_path) as archive, archive.open(member) as src, \
                open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                copied += len(chunk)
                on_bytes(len(chunk))
    except zipfile.BadZipFile as exc:
        out.unlink(missing_ok=True)
        raise DownloadError(f"{member} in {archive_path.name} is damaged: {exc}",
                            fix="rerun the command; the archive is fetched again") from exc
    return copied


def remove_tree(path: Path) -> None:
    """Remove a scratch folder, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
