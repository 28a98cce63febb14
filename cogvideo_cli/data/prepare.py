"""prepare-data's engine: from a SOURCE to a data.jsonl training can trust, and a report.

``inspect_data`` finds the entries, checks captions, probes every video in isolated worker
processes and judges each against MindSpeed-MM's sampling; it writes nothing.
``write_prepared`` writes the output folder atomically: ``data.jsonl`` (accepted rows only,
MindSpeed-MM's exact schema), ``report.json`` (every video's facts, and the reason and fix
for each rejected one) and, for image-to-video, ``first_frames/``. ``prepare_data`` does
both and records the result in the workspace.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cogvideo_cli import __version__
from cogvideo_cli.core.errors import DataError
from cogvideo_cli.core.fsutil import atomic_dir, check_target
from cogvideo_cli.core.progress import SILENT, Reporter
from cogvideo_cli.data import captions as caption_checks
from cogvideo_cli.data.cache import ProbeCache
from cogvideo_cli.data.probe import (DEFAULT_TIMEOUT, ProbeStats, extract_first_frames,
                                     probe_videos)
from cogvideo_cli.data.rules import VIDEO_EXTENSIONS, Policy, Reason, SamplingSettings, judge
from cogvideo_cli.data.sources import Entry, Source, open_source

DATA_FILE, REPORT_FILE, FRAMES_DIR = "data.jsonl", "report.json", "first_frames"
SMALL_DATASET = 64  # below this, say how large a batch the data can feed


@dataclass
class PrepareOptions:
    """Everything that decides the verdicts, besides the files themselves."""

    variant: str
    settings: SamplingSettings
    policy: Policy = Policy()
    workers: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    i2v_images: bool = False
    cache: ProbeCache | None = None
    count_tokens: Callable[[str], int] | None = None
    text_length: int = 226
    data_folder: Path | None = None


@dataclass
class Row:
    """One video: where it came from, what the probe found, the verdict."""

    entry: Entry
    facts: dict | None
    reasons: list[Reason] = field(default_factory=list)
    warnings: list[Reason] = field(default_factory=list)
    sampling: dict | None = None
    first_frame: str | None = None

    @property
    def accepted(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        caption = self.entry.caption.text
        return {"file": self.entry.file, "where": self.entry.where,
                "path": str(self.entry.path), "accepted": self.accepted,
                "reasons": [r.to_dict() for r in self.reasons],
                "warnings": [w.to_dict() for w in self.warnings],
                "caption": caption, "facts": self.facts, "sampling": self.sampling,
                "first_frame": self.first_frame}


@dataclass
class Inspection:
    """The verdict on a whole source, before anything is written."""

    source: Source
    options: PrepareOptions
    rows: list[Row]
    stats: ProbeStats
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> list[Row]:
        return [row for row in self.rows if row.accepted]


# --- inspecting ----------------------------------------------------------------------------

def _entry_reasons(entry: Entry) -> list[Reason]:
    """Problems of the row itself: no file, not a video extension, caption."""
    reasons = list(entry.problems)
    if not reasons and not entry.path.exists():
        reasons.append(Reason("video_missing", f"{entry.file} does not exist (from "
                              f"{entry.where})", "fix the path, or drop the row"))
    elif not reasons and entry.path.suffix.lower() not in VIDEO_EXTENSIONS:
        reasons.append(Reason(
            "not_video_extension", f"{entry.file}: MindSpeed-MM reads only "
            f"{' '.join(VIDEO_EXTENSIONS)} as video and would treat this as an image",
            "convert it to .mp4"))
    if entry.caption.problem:
        reasons.append(entry.caption.problem)
    return reasons


def _shared_caption_warnings(rows: list[Row]) -> None:
    counts = caption_checks.duplicate_counts([r.entry.caption.text for r in rows])
    for row in rows:
        text = row.entry.caption.text
        key = text[0] if isinstance(text, list) else text
        if key and counts[key] > 1:
            row.warnings.append(Reason("caption_shared", f"the same caption is used by "
                                       f"{counts[key]} videos", "write a caption per video"))


def _listed_twice_warnings(rows: list[Row]) -> None:
    counts = Counter(row.entry.path for row in rows if not row.entry.problems)
    for row in rows:
        if not row.entry.problems and counts[row.entry.path] > 1:
            row.warnings.append(Reason("listed_twice", f"{row.entry.file} is listed "
                                       f"{counts[row.entry.path]} times"))


def _length_warnings(rows: list[Row], options: PrepareOptions) -> None:
    if options.count_tokens is None:
        return
    for row in rows:
        if row.entry.caption.text:
            note = caption_checks.length_warning(row.entry.caption.text,
                                                 options.count_tokens, options.text_length)
            if note:
                row.warnings.append(note)


def _judge_row(entry: Entry, facts: dict | None, options: PrepareOptions) -> Row:
    row = Row(entry, facts, reasons=_entry_reasons(entry),
              warnings=list(entry.caption.notes))
    if facts is None:
        return row
    verdict = judge(facts, options.settings, options.policy)
    row.reasons += verdict.reasons
    row.warnings += verdict.warnings
    row.sampling = verdict.sampling.to_dict() if verdict.sampling else None
    return row


def inspect_data(source_path: Path, options: PrepareOptions,
                 reporter: Reporter = SILENT) -> Inspection:
    """Check every entry of a SOURCE against MindSpeed-MM's rules; write nothing.

    Args:
        source_path: a dataset folder or a data.jsonl / .csv file.
        options: variant settings, policy, workers, timeout, cache, token counter.
        reporter: progress of the probing.
    """
    source = open_source(source_path, options.data_folder)
    if not source.entries:
        raise DataError(f"{source.path} lists no videos", value=source.path,
                        fix="add videos, or point SOURCE at the dataset's root")
    probe_paths = [e.path for e in source.entries
                   if not e.problems and e.path.suffix.lower() in VIDEO_EXTENSIONS
                   and e.path.exists()]
    facts, stats = probe_videos(probe_paths, workers=options.workers,
                                timeout=options.timeout, cache=options.cache,
                                reporter=reporter)
    rows = [_judge_row(e, facts.get(e.path), options) for e in source.entries]
    _shared_caption_warnings(rows)
    _listed_twice_warnings(rows)
    _length_warnings(rows, options)
    return Inspection(source, options, rows, stats,
                      notes=list(source.notes) + _size_notes(rows))


def _size_notes(rows: list[Row]) -> list[str]:
    """A small dataset can hang MindSpeed-MM's loader (reference 4.4 and 4.5)."""
    usable = sum(row.accepted for row in rows)
    if not usable or usable >= SMALL_DATASET:
        return []
    return [f"only {usable} usable video(s): micro-batch x data-parallel size must not "
            f"exceed {usable}, or MindSpeed-MM's loader yields nothing and spins for ever"
            + (" (and with 1 sample its retry on a bad read raises)" if usable == 1 else "")]


# --- summarising ---------------------------------------------------------------------------

def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(inspection: Inspection) -> dict:
    """Counts, rejections by reason, duration, frames / fps / resolution spread."""
    rows, accepted = inspection.rows, inspection.accepted
    facts = [r.facts for r in accepted if r.facts]
    sizes = Counter(f"{f['width']}x{f['height']}" for f in facts)
    return {
        "videos": len(rows), "accepted": len(accepted),
        "rejected": len(rows) - len(accepted),
        "rejected_by_reason": dict(Counter(r.reasons[0].code for r in rows if r.reasons)
                                   .most_common()),
        "warnings_by_kind": dict(Counter(w.code for r in accepted for w in r.warnings)
                                 .most_common()),
        "duration_seconds": round(sum(f.get("duration", 0.0) for f in facts), 3),
        "frames": _spread([f["frames"] for f in facts]),
        "fps": _spread([round(f["fps"], 3) for f in facts]),
        "resolutions": dict(sizes.most_common(8)),
        "probed": inspection.stats.probed, "cached": inspection.stats.cached,
        "probe_seconds": round(inspection.stats.seconds, 3),
    }


# --- writing -------------------------------------------------------------------------------

def _data_line(row: Row) -> str:
    return json.dumps({"file": row.entry.file, "captions": row.entry.caption.text},
                      ensure_ascii=False) + "\n"


def _report(inspection: Inspection, out: Path) -> dict:
    options, source = inspection.options, inspection.source
    return {
        "made_by": f"cogvx {__version__} prepare-data",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"kind": source.kind, "path": str(source.path)},
        "data_folder": str(source.data_folder),
        "data_path": str(out / DATA_FILE) if inspection.accepted else None,
        "variant": options.variant, "settings": options.settings.to_dict(),
        "policy": {"allow_pad": options.policy.allow_pad,
                   "min_side": options.policy.min_side, "timeout": options.timeout},
        "summary": summarize(inspection), "notes": inspection.notes,
        "videos": [row.to_dict() for row in inspection.rows],
    }


def _first_frames(inspection: Inspection, folder: Path, reporter: Reporter) -> None:
    """Save each accepted clip's first frame; a clip whose frame fails is rejected."""
    settings, jobs = inspection.options.settings, {}
    (folder / FRAMES_DIR).mkdir()
    for number, row in enumerate(inspection.rows):
        if row.accepted:
            name = f"{FRAMES_DIR}/{number:05d}-{Path(row.entry.file).stem}.png"
            jobs[number] = (str(row.entry.path), row.sampling["indices"][0],
                            settings.width, settings.height, str(folder / name))
    outcomes = extract_first_frames(jobs, workers=inspection.options.workers,
                                    timeout=inspection.options.timeout, reporter=reporter)
    for number, outcome in outcomes.items():
        row = inspection.rows[number]
        if outcome.status == "ok":
            row.first_frame = str(Path(jobs[number][4]).relative_to(folder))
        else:
            row.reasons.append(Reason("first_frame_failed", f"the first frame could not "
                                      f"be saved: {outcome.error}", "re-encode the video"))


def write_prepared(inspection: Inspection, out: Path, *, force: bool = False,
                   reporter: Reporter = SILENT) -> dict:
    """Write data.jsonl, report.json (and first_frames/) into ``out`` atomically.

    When nothing is usable only report.json is written, so the reasons can be read.

    Returns:
        The report (what report.json holds).
    """
    out = Path(out).absolute()
    with atomic_dir(out, force=force, what="output folder") as tmp:
        if inspection.options.i2v_images and inspection.accepted:
            _first_frames(inspection, tmp, reporter)
        if inspection.accepted:
            with open(tmp / DATA_FILE, "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(_data_line(row) for row in inspection.accepted)
        report = _report(inspection, out)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1, ensure_ascii=False),
                                       encoding="utf-8")
    return report


def check_usable(report: dict) -> None:
    """Raise when a prepare-data report accepted nothing (training would hang or spin)."""
    summary = report["summary"]
    if summary["accepted"]:
        return
    reasons = ", ".join(f"{code}: {n}" for code, n in summary["rejected_by_reason"].items())
    raise DataError(f"none of the {summary['videos']} videos is usable ({reasons})",
                    value=report["source"]["path"],
                    fix=f"read the reasons and fixes in {report['out']}/{REPORT_FILE}")


def _failed_output(out: Path) -> bool:
    """Whether ``out`` is what a run with nothing usable left: report.json alone."""
    if not out.is_dir() or [p.name for p in out.iterdir()] != [REPORT_FILE]:
        return False
    try:
        report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
        return report["summary"]["accepted"] == 0
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prepare_data(source_path: Path, out: Path, options: PrepareOptions, *,
                 force: bool = False, workspace=None, reporter: Reporter = SILENT,
                 raise_if_unusable: bool = True) -> dict:
    """Check a SOURCE, write the output folder, record it in the workspace.

    Args:
        source_path: a dataset folder or a data.jsonl / .csv file.
        out: the output folder (refused if it exists, unless ``force``).
        options: settings, policy and probing options.
        force: replace an existing output folder.
        workspace: a :class:`~cogvideo_cli.core.workspace.Workspace` to record
            ``[data] data_path, data_folder, report, variant`` in (only when some video
            is usable).
        reporter: progress callback.
        raise_if_unusable: raise instead of returning when nothing is usable; callers
            that show the report first pass False and call :func:`check_usable` after.

    Returns:
        The report (what report.json holds), plus ``out``.

    Raises:
        DataError: nothing is usable (report.json is still written, with every reason).
    """
    out = Path(out).absolute()
    # a folder left by a run where nothing was usable holds only its report: replace it
    force = force or _failed_output(out)
    check_target(out, force, "output folder")  # before any minute is spent probing
    inspection = inspect_data(source_path, options, reporter)
    report = write_prepared(inspection, out, force=force, reporter=reporter)
    report["out"] = str(out)
    if inspection.accepted and workspace is not None:
        workspace.record("data", data_path=str(out / DATA_FILE),
                         data_folder=str(inspection.source.data_folder),
                         report=str(out / REPORT_FILE), variant=options.variant)
    if raise_if_unusable:
        check_usable(report)
    return report
