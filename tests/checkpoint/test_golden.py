"""Every case of ../shared/golden/convert/expected.json, reproduced exactly."""

from __future__ import annotations

import pytest
from ckpt_helpers import FIXTURES, golden_cases, load_pt, summarize

from cogvideo_cli.checkpoint import convert
from cogvideo_cli.checkpoint.layout import sidecar_path

CASES = golden_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_case(name, tmp_path):
    case = CASES[name]
    run = convert.sat_to_mm if case["method"] == "source_to_mm" else convert.hf_to_mm
    out = tmp_path / "out"
    report = run(FIXTURES / case["fixture"] / "transformer", out, tp=case["tp"],
                 pp_layers=case["pp_layers"])

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(case["expected"])
    for rel, want in case["expected"].items():
        if rel.endswith(".txt"):
            assert (out / rel).read_text() == want  # exactly, no newline
        else:
            assert summarize(load_pt(out / rel)) == want, rel
    assert report["variant"].startswith(case["version"])
    assert sidecar_path(out).is_file()


def test_golden_detects_each_fixture_variant():
    from cogvideo_cli.checkpoint.inspection import inspect_checkpoint

    seen = {f: inspect_checkpoint(FIXTURES / f / "transformer")["variant"]
            for f in ("sat-t2v-1.5", "sat-i2v-1.5", "sat-i2v-1.0", "hf-t2v-1.5", "hf-i2v-1.5")}
    assert seen == {"sat-t2v-1.5": "t2v-1.5", "sat-i2v-1.5": "i2v-1.5",
                    "sat-i2v-1.0": "i2v-1.0", "hf-t2v-1.5": "t2v-1.5", "hf-i2v-1.5": "i2v-1.5"}


def test_i2v10_says_once_that_mm_ignores_the_learned_table(tmp_path):
    report = convert.sat_to_mm(FIXTURES / "sat-i2v-1.0" / "transformer", tmp_path / "o", tp=2)
    assert len(report["notes"]) == 1
    assert "pos_embed.pos_embedding" in report["notes"][0]
    assert "never loads it" in report["notes"][0]
