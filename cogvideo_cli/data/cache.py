"""A cache of probe results keyed by a file's path, size and modification time.

A second ``prepare-data`` over the same files answers from here instead of decoding them
again. An entry is used only when the path, the size, the modification time (ns) and the
probe version all match, so a replaced or edited file is probed afresh. The cache is one
JSON file, written atomically; a damaged one is ignored and rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cogvideo_cli.core.fsutil import write_text_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$COGVX_CACHE_DIR``, else ``$XDG_CACHE_HOME/cogvx``, else ``~/.cache/cogvx``."""
    explicit = os.environ.get("COGVX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cogvx"


class ProbeCache:
    """Probe facts by (absolute path, size, mtime_ns), stored in one JSON file.

    Args:
        path: the cache file.
        tag: what else the facts depend on (probe version, reader); entries made with a
            different tag are not used.
    """

    def __init__(self, path: Path, tag: str = "") -> None:
        self.path = Path(path)
        self.tag = f"v{CACHE_VERSION}:{tag}"
        self._entries = self._read()
        self._dirty = False

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable probe cache %s: %s", self.path, exc)
            return {}
        entries = data.get("entries") if isinstance(data, dict) else None
        return entries if isinstance(entries, dict) else {}

    def _key(self, path: Path) -> str | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return f"{self.tag}|{Path(path).absolute()}|{stat.st_size}|{stat.st_mtime_ns}"

    def get(self, path: Path) -> dict | None:
        """The cached facts for ``path`` if it is unchanged, else ``None``."""
        key = self._key(path)
        return self._entries.get(key) if key else None

    def put(self, path: Path, facts: dict) -> None:
        """Remember facts for ``path`` as it is now."""
        key = self._key(path)
        if key:
            self._entries[key] = facts
            self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        """Write the cache if anything changed, keeping entries another run added."""
        if not self._dirty:
            return
        merged = self._read()
        merged.update(self._entries)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps({"version": CACHE_VERSION,
                                                     "entries": merged}))
        except OSError as exc:  # a cache that cannot be written only costs speed
            log.warning("could not write the probe cache %s: %s", self.path, exc)
        self._entries, self._dirty = merged, False
