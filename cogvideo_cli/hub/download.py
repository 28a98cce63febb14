"""The engine of ``cogvx download``: plan, check what is there, fetch what is not, verify.

``plan_download`` asks the hub for the file lists (sizes and SHA-256) and says, file by
file, whether it is present, must be checked, fetched or resumed; it writes nothing.
``run_download`` checks existing files, checks free disk, fetches the missing or bad ones
into ``<target>/.cogvx-download/`` and renames each into place once verified, writing
``cogvx-download.json`` after every file. ``verify_download`` rereads a folder against that
record without the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import DownloadError, UsageError
from cogvideo_cli.core.fsutil import free_bytes, write_text_atomic
from cogvideo_cli.core.progress import SILENT, Reporter
from cogvideo_cli.core.variants import get_variant
from cogvideo_cli.hub import archive, transfer
from cogvideo_cli.hub.manifest import (WeightsLayout, check_format, default_target,
                                       parse_components, parts_for)
from cogvideo_cli.hub.record import (RECORD_NAME, SCRATCH_NAME, Digest, FileCheck, Record,
                                     digest_file, remove_quietly, verify_recorded)
from cogvideo_cli.hub.remote import (Endpoints, HubLister, RemoteFile, probe_size,
                                     remote_files, resolve_endpoints)

log = logging.getLogger(__name__)

SPACE_MARGIN = 64 << 20  # bytes kept free beyond the plan's need


@dataclass
class PlannedFile:
    """One file of the plan and what the run will do with it."""

    remote: RemoteFile
    status: str  # "present", "check", "fetch" or "resume"
    have: int = 0  # bytes already downloaded into its part

    def to_dict(self) -> dict[str, Any]:
        r = self.remote
        return {"path": r.dest, "component": r.component, "size": r.expected_size,
                "verify": r.check, "source": r.source, "status": self.status,
                "resume_from": self.have}


@dataclass
class DownloadPlan:
    """Everything a download will do, computed before a byte is written."""

    variant: str
    format: str
    components: tuple[str, ...]
    target: Path
    endpoints: Endpoints
    files: list[PlannedFile]
    commits: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def layout(self) -> WeightsLayout:
        return WeightsLayout(self.target, self.format)

    def to_fetch(self) -> list[PlannedFile]:
        """Files that will be downloaded (missing, partial or found bad)."""
        return [f for f in self.files if f.status in ("fetch", "resume")]

    def fetch_bytes(self, extracting: bool = False) -> int:
        """Bytes still to download (files of unknown size count 0).

        With ``extracting``, a zip counts twice: the archive and what comes out of it
        are on disk together for a moment.
        """
        need, archives = 0, set()
        for item in self.to_fetch():
            remote = item.remote
            if remote.kind == "cloud-zip":
                if remote.url in archives:
                    continue
                archives.add(remote.url)
            left = max((remote.expected_size or 0) - item.have, 0)
            need += left + (remote.expected_size or 0 if extracting and
                            remote.kind == "cloud-zip" else 0)
        return need

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "format": self.format,
                "components": list(self.components), "target": str(self.target),
                "endpoint": self.endpoints.hub, "cloud_url": self.endpoints.cloud,
                "commits": self.commits, "fetch_bytes": self.fetch_bytes(),
                "unknown_sizes": sum(f.remote.expected_size is None for f in self.to_fetch()),
                "files": [f.to_dict() for f in self.files], "notes": self.notes}


def plan_download(variant: str, fmt: str = "sat", components: str | None = None,
                  target: Path | None = None, workspace_root: Path | None = None,
                  endpoint: str | None = None, cloud_url: str | None = None,
                  environ: dict[str, str] | None = None, probe: bool = True) -> DownloadPlan:
    """Work out every file a variant needs, where it goes and what must be fetched.

    Args:
        variant: ``t2v-1.0``, ``i2v-1.0``, ``t2v-1.5`` or ``i2v-1.5``.
        fmt: ``sat`` (MindSpeed-MM) or ``diffusers``.
        components: comma list of transformer, vae, t5, tokenizer (default: all).
        target: the weights folder (default ``<workspace>/weights/<variant>-<format>``).
        workspace_root: where the default target goes (default: working directory).
        endpoint: hub endpoint (default ``HF_ENDPOINT``, then huggingface.co).
        cloud_url: base URL of the Tsinghua cloud shares (default ``COGVX_CLOUD_URL``).
        environ: environment to read (default ``os.environ``).
        probe: ask cloud links for their sizes (HEAD) when they must be fetched.
    """
    var = get_variant(variant)
    fmt = check_format(fmt)
    chosen = parse_components(components)
    target = Path(target or default_target(Path(workspace_root or Path.cwd()), var, fmt))
    target = target.expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise UsageError(f"the target {target} is a file", fix="pass --target a folder")
    endpoints = resolve_endpoints(endpoint, cloud_url, environ)
    notes = _notes(endpoints)
    parts = parts_for(var, fmt, chosen)
    lister = HubLister(endpoints)
    remotes = remote_files(parts, endpoints, lister)
    record = Record.load(target)
    files = [_plan_file(r, record, target) for r in remotes]
    plan = DownloadPlan(var.name, fmt, chosen, target, endpoints, files,
                        commits=dict(lister.commits), notes=notes)
    if probe:
        _probe_cloud_sizes(plan)
    return plan


def _notes(endpoints: Endpoints) -> list[str]:
    notes = []
    if endpoints.mirror:
        # Xet transfers fetch from huggingface.co's storage directly and bypass a mirror.
        os.environ["HF_HUB_DISABLE_XET"] = "1"
        notes.append(f"hub mirror {endpoints.hub} (from {endpoints.hub_from}): Xet transfers, "
                     "which bypass mirrors, are off (HF_HUB_DISABLE_XET=1); every file comes "
                     "over HTTP from the mirror")
    if endpoints.token_from:
        notes.append(f"using the Hugging Face token from {endpoints.token_from}")
    if endpoints.cloud_from != "default":
        notes.append(f"cloud shares from {endpoints.cloud} (from {endpoints.cloud_from})")
    return notes


def part_path(target: Path, remote: RemoteFile) -> Path:
    """Where a file is downloaded before it is verified (a zip's archive for members)."""
    scratch = target / SCRATCH_NAME
    if remote.kind == "cloud-zip":
        key = hashlib.sha1(remote.url.encode()).hexdigest()[:16]
        return scratch / "archives" / f"{key}.zip.part"
    return scratch / (remote.dest + ".part")


def request_for(remote: RemoteFile, headers: dict[str, str] | None = None) -> transfer.Request:
    """The HTTP request that fetches a file (for a zip member: its archive)."""
    if remote.kind == "hub":
        return transfer.Request(
            url=remote.url, what=remote.dest, size=remote.size, headers=headers,
            identity=remote.sha256 or remote.git_sha1 or remote.url,
            refused_fix="log in with `hf auth login` or set HF_TOKEN, and accept the "
                        "model's terms on its page")
    what = "the zip archive" if remote.kind == "cloud-zip" else remote.dest
    return transfer.Request(url=remote.url, what=what, identity=remote.url, size=None,
                            refused_fix="the share may have expired; open the link in a "
                                        "browser to check it")


def _plan_file(remote: RemoteFile, record: Record, target: Path) -> PlannedFile:
    if (target / remote.dest).exists():
        entry = record.files.get(remote.dest)
        if entry and record.unchanged(remote.dest) and _entry_matches(entry, remote):
            return PlannedFile(remote, "present")
        return PlannedFile(remote, "check")
    if remote.kind == "text":
        return PlannedFile(remote, "fetch")
    have = transfer.resumable_bytes(part_path(target, remote), request_for(remote))
    return PlannedFile(remote, "resume" if have else "fetch", have)


def _entry_matches(entry: dict[str, Any], remote: RemoteFile) -> bool:
    """A record entry still describes what the source serves now."""
    if remote.sha256:
        return entry.get("sha256") == remote.sha256
    if remote.git_sha1:
        return entry.get("git_sha1") == remote.git_sha1
    if remote.text is not None:
        return entry.get("sha256") == hashlib.sha256(remote.text.encode()).hexdigest()
    return True


def _probe_cloud_sizes(plan: DownloadPlan) -> None:
    pending = [f for f in plan.to_fetch() if f.remote.kind.startswith("cloud")]
    if not pending:
        return
    sizes: dict[str, int | None] = {}
    with transfer.cloud_client() as client:
        for item in pending:
            if item.remote.url not in sizes:
                sizes[item.remote.url] = probe_size(client, item.remote.url)
    for item in pending:
        item.remote.probed = sizes[item.remote.url]


# --- running ---------------------------------------------------------------------------

class _Run:
    """State of one download run: the plan, the record, progress and the clients."""

    def __init__(self, plan: DownloadPlan, reporter: Reporter) -> None:
        self.plan = plan
        self.target = plan.target
        self.reporter = reporter
        self.record = Record.load(plan.target)
        self.fetched: list[str] = []
        self.repaired: list[str] = []
        self.kept: list[str] = []

    def hash_file(self, path: Path, remote: RemoteFile | None) -> Digest:
        """Digest a file with a progress bar (large files take a while)."""
        task = self.reporter.start(f"verifying {path.name}", total=path.stat().st_size,
                                   unit="B")
        try:
            return digest_file(path, git_sha1=bool(remote and remote.git_sha1),
                               on_bytes=lambda n: self.reporter.advance(task, n))
        finally:
            self.reporter.finish(task)

    def verify(self, path: Path, remote: RemoteFile,
               entry: dict[str, Any] | None) -> tuple[bool, str, Digest | None]:
        """Check a file against the source's size and checksum (or format)."""
        size = path.stat().st_size
        if remote.size is not None and size != remote.size:
            return False, f"{size} bytes, expected {remote.size}", None
        digest = self.hash_file(path, remote)
        reason = _mismatch(path, remote, entry, digest)
        return (not reason), reason, digest

    def keep(self, path: Path, remote: RemoteFile, digest: Digest) -> None:
        """Move a verified file into place and record it."""
        dest = self.target / remote.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path != dest:
            os.replace(path, dest)
        self.record.note_file(remote.dest, digest, remote.source, remote.check)
        self.record.save()


def _mismatch(path: Path, remote: RemoteFile, entry: dict[str, Any] | None,
              digest: Digest) -> str:
    """Why a file is not what its source says (empty when it is)."""
    if remote.sha256 and digest.sha256 != remote.sha256:
        return f"SHA-256 {digest.sha256[:16]}… differs from the hub's {remote.sha256[:16]}…"
    if remote.git_sha1 and digest.git_sha1 != remote.git_sha1:
        return f"git blob id {digest.git_sha1[:12]} differs from the hub's {remote.git_sha1[:12]}"
    if remote.text is not None and path.read_bytes() != remote.text.encode():
        return f"content differs from {remote.text!r}"
    if not (remote.sha256 or remote.git_sha1) and entry and entry.get("sha256") \
            and entry["sha256"] != digest.sha256:
        return "SHA-256 differs from the one recorded when it arrived"
    if remote.magic:
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not head.startswith(remote.magic):
            return f"not a torch checkpoint (starts {head!r})"
    return ""


def run_download(plan: DownloadPlan, reporter: Reporter = SILENT) -> dict[str, Any]:
    """Carry out a plan: check, make room, fetch, verify; return what happened."""
    plan.target.mkdir(parents=True, exist_ok=True)
    run = _Run(plan, reporter)
    run.record.meta = _record_meta(plan, run.record.meta)
    _check_existing(run)
    check_space(plan)
    _fetch_all(run)
    run.record.save()
    archive.remove_tree(plan.target / SCRATCH_NAME)
    return _result(run)


def _record_meta(plan: DownloadPlan, old: dict[str, Any]) -> dict[str, Any]:
    from cogvideo_cli import __version__

    components = sorted(set(old.get("components", [])) | set(plan.components)) \
        if old.get("format") == plan.format and old.get("variant") == plan.variant \
        else list(plan.components)
    commits = {**old.get("commits", {}), **plan.commits}
    return {"made_by": f"cogvx {__version__} download", "variant": plan.variant,
            "format": plan.format, "components": components, "endpoint": plan.endpoints.hub,
            "cloud_url": plan.endpoints.cloud, "commits": commits,
            "huggingface_hub": _hub_version()}


def _hub_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("huggingface_hub")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _check_existing(run: _Run) -> None:
    """Verify files that exist but are not known good; bad ones are fetched again."""
    for item in run.plan.files:
        if item.status != "check":
            continue
        path = run.target / item.remote.dest
        ok, reason, digest = run.verify(path, item.remote, run.record.files.get(item.remote.dest))
        if ok and digest is not None:
            if item.remote.dest not in run.record.files:
                run.kept.append(item.remote.dest)
            run.keep(path, item.remote, digest)
            item.status = "present"
        else:
            log.warning("%s is bad (%s); fetching it again", item.remote.dest, reason)
            run.repaired.append(item.remote.dest)
            item.status = "fetch"
            item.have = 0


def check_space(plan: DownloadPlan, free: Callable[[Path], int] | None = None) -> None:
    """Refuse to start when the target's disk cannot hold what is left to fetch."""
    need = plan.fetch_bytes(extracting=True)
    have = (free or free_bytes)(plan.target)
    if need + SPACE_MARGIN > have:
        raise DownloadError(
            f"{plan.target} needs {human_size(need)} free for this download, "
            f"but its disk has {human_size(have)}", value=str(plan.target),
            fix="free some space, or pass --target a folder on a larger disk")


def human_size(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover


def _fetch_all(run: _Run) -> None:
    todo = run.plan.to_fetch()
    if not todo:
        return
    total = sum(f.remote.expected_size or 0 for f in todo)
    task = run.reporter.start(f"downloading {run.plan.variant} ({run.plan.format})",
                              total=total or None, unit="B")
    progress = lambda n: run.reporter.advance(task, n)  # noqa: E731
    try:
        _fetch_hub(run, [f for f in todo if f.remote.kind == "hub"], progress)
        _fetch_cloud_files(run, [f for f in todo if f.remote.kind == "cloud-file"], progress)
        _fetch_archives(run, [f for f in todo if f.remote.kind == "cloud-zip"], progress)
        for item in (f for f in todo if f.remote.kind == "text"):
            _write_text(run, item.remote)
    finally:
        run.reporter.finish(task)


def _fetch_hub(run: _Run, items: list[PlannedFile], progress: Callable[[int], None]) -> None:
    if not items:
        return
    from huggingface_hub.utils import build_hf_headers, get_session

    headers = build_hf_headers()  # the token from the usual places; never shown
    client = get_session()
    for item in items:
        _fetch_verified(run, client, item.remote, request_for(item.remote, headers), progress)


def _fetch_verified(run: _Run, client: Any, remote: RemoteFile, request: transfer.Request,
                    progress: Callable[[int], None]) -> None:
    """Download one file, verify it, and retry once from scratch if it is bad."""
    part = part_path(run.target, remote)
    reason = ""
    for _attempt in range(2):
        transfer.fetch(client, request, part, progress)
        if remote.magic:
            _refuse_non_checkpoint(part, remote)
        ok, reason, digest = run.verify(part, remote, None)
        if ok and digest is not None:
            run.keep(part, remote, digest)
            remove_quietly(transfer.sidecar(part))
            run.fetched.append(remote.dest)
            return
        log.warning("%s failed verification (%s); downloading it again", remote.dest, reason)
        remove_quietly(part, transfer.sidecar(part))
    raise DownloadError(f"{remote.dest} failed verification twice: {reason}",
                        value=remote.source,
                        fix="the source may be serving a damaged file; retry later or try "
                            "another HF_ENDPOINT")


def _refuse_non_checkpoint(part: Path, remote: RemoteFile) -> None:
    try:
        transfer.check_magic(part, remote.magic, f"torch checkpoint for {remote.dest}",
                             remote.url)
    except DownloadError:
        remove_quietly(part, transfer.sidecar(part))
        raise


def _fetch_cloud_files(run: _Run, items: list[PlannedFile],
                       progress: Callable[[int], None]) -> None:
    if not items:
        return
    with transfer.cloud_client() as client:
        for item in items:
            _fetch_verified(run, client, item.remote, request_for(item.remote), progress)


def _fetch_archives(run: _Run, items: list[PlannedFile],
                    progress: Callable[[int], None]) -> None:
    by_url: dict[str, list[RemoteFile]] = {}
    for item in items:
        by_url.setdefault(item.remote.url, []).append(item.remote)
    for url, members in by_url.items():
        zip_path = _fetch_archive(run, members[0], progress)
        names = archive.check_archive(zip_path, url)
        for remote in members:
            _extract(run, zip_path, archive.find_member(names, remote.member or "", url),
                     remote)
        remove_quietly(zip_path)


def _fetch_archive(run: _Run, remote: RemoteFile, progress: Callable[[int], None]) -> Path:
    """The complete zip of a cloud share (kept from an earlier run if already whole)."""
    part = part_path(run.target, remote)
    whole = part.with_suffix("")  # .zip
    if whole.exists():
        return whole
    with transfer.cloud_client() as client:
        transfer.fetch(client, request_for(remote), part, progress)
    try:
        transfer.check_magic(part, archive.ZIP_MAGIC, "zip archive", remote.url)
    except DownloadError:
        remove_quietly(part, transfer.sidecar(part))
        raise
    os.replace(part, whole)
    remove_quietly(transfer.sidecar(part))
    return whole


def _extract(run: _Run, zip_path: Path, member: str, remote: RemoteFile) -> None:
    out = run.target / SCRATCH_NAME / (remote.dest + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    archive.extract_member(zip_path, member, out)
    ok, reason, digest = run.verify(out, remote, None)
    if not ok or digest is None:
        remove_quietly(out, zip_path)
        raise DownloadError(f"{member} from {remote.url} is not usable: {reason}",
                            fix="rerun the command to fetch the archive again")
    run.keep(out, remote, digest)
    run.fetched.append(remote.dest)


def _write_text(run: _Run, remote: RemoteFile) -> None:
    dest = run.target / remote.dest
    write_text_atomic(dest, remote.text or "")
    run.keep(dest, remote, digest_file(dest))
    run.fetched.append(remote.dest)


def _result(run: _Run) -> dict[str, Any]:
    plan = run.plan
    present = sorted(set(run.record.files) & {f.remote.dest for f in plan.files})
    return {"target": str(plan.target), "variant": plan.variant, "format": plan.format,
            "components": list(plan.components), "fetched": run.fetched,
            "repaired": run.repaired, "kept_unrecorded": run.kept, "files": len(present),
            "record": str(plan.target / RECORD_NAME), "commits": plan.commits,
            "workspace": plan.layout.workspace_values(plan.components), "notes": plan.notes}


# --- verify only -------------------------------------------------------------------------

def verify_download(target: Path, reporter: Reporter = SILENT) -> dict[str, Any]:
    """Reread every file of a weights folder against its record; no network.

    Raises:
        DownloadError: the folder has no record (it was not made by ``cogvx download``).
    """
    target = Path(target).expanduser().absolute()
    record = Record.load(target)
    if not record.files:
        what = (f"{target}'s {RECORD_NAME} records no files" if record.path.is_file()
                else f"{target} has no {RECORD_NAME}")
        raise DownloadError(
            f"{what}, so there is nothing to verify against", value=str(target),
            fix="run `cogvx download <variant> --target <folder>` on it: existing files are "
                "checked against the hub and only missing or bad ones are fetched")
    total = sum(int(e.get("size") or 0) for e in record.files.values())
    task = reporter.start(f"verifying {target.name}", total=total, unit="B")
    try:
        checks = verify_recorded(record, on_bytes=lambda n: reporter.advance(task, n))
    finally:
        reporter.finish(task)
    return _verify_result(target, record, checks)


def _verify_result(target: Path, record: Record, checks: list[FileCheck]) -> dict[str, Any]:
    bad = [c for c in checks if not c.ok]
    return {"target": str(target), "variant": record.meta.get("variant"),
            "format": record.meta.get("format"), "ok": not bad, "checked": len(checks),
            "bad": [{"path": c.dest, "reason": c.reason} for c in bad],
            "bytes": sum(c.size or 0 for c in checks)}
