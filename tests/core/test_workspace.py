"""cogvx.toml: round trip, overrides, and errors that name the key and the line."""

from __future__ import annotations

import pytest

from cogvideo_cli.core.errors import ConfigError
from cogvideo_cli.core.workspace import FILENAME, Workspace


def test_missing_file_is_empty(tmp_path):
    ws = Workspace.load(tmp_path)
    assert ws.rows() == [] and not ws.path.exists()


def test_record_round_trip_human_readable(tmp_path):
    ws = Workspace.load(tmp_path)
    ws.record("checkpoint", path=tmp_path / "mm", variant="t2v-1.5", tp=2, pp_layers=[21, 21])
    ws.record("mindspeed", path='/opt/My "MM"')
    text = (tmp_path / FILENAME).read_text()
    assert "[checkpoint]" in text and "tp = 2  #" in text and "pp_layers = [21, 21]" in text
    again = Workspace.load(tmp_path)
    assert again.get("checkpoint", "pp_layers") == [21, 21]
    assert again.get("mindspeed", "path") == '/opt/My "MM"'
    assert again.path_value("checkpoint", "path") == tmp_path / "mm"
    again.record("checkpoint", tp=None)
    assert Workspace.load(tmp_path).get("checkpoint", "tp") is None


def test_relative_paths_resolve_against_workspace(tmp_path):
    (tmp_path / FILENAME).write_text('[data]\ndata_path = "prepared/data.jsonl"\n')
    assert Workspace.load(tmp_path).path_value("data", "data_path") == \
        tmp_path / "prepared" / "data.jsonl"


def test_unknown_key_names_key_line_and_suggestion(tmp_path):
    (tmp_path / FILENAME).write_text('[checkpoint]\nvariant = "t2v-1.5"\n\npath_ = "x"\n')
    with pytest.raises(ConfigError) as err:
        Workspace.load(tmp_path)
    text = str(err.value)
    assert f"{FILENAME}:4" in text and "'path_'" in text and "did you mean 'path'" in text


def test_unknown_section(tmp_path):
    (tmp_path / FILENAME).write_text('[wieghts]\nroot = "x"\n')
    with pytest.raises(ConfigError, match=r"cogvx.toml:1: unknown section \[wieghts\]") as err:
        Workspace.load(tmp_path)
    assert "did you mean 'weights'" in str(err.value)


def test_wrong_type_names_line(tmp_path):
    (tmp_path / FILENAME).write_text('[checkpoint]\ntp = "two"\n')
    with pytest.raises(ConfigError, match=r"cogvx.toml:2: \[checkpoint\] tp must be int"):
        Workspace.load(tmp_path)


def test_corrupt_toml(tmp_path):
    (tmp_path / FILENAME).write_text('[checkpoint\npath = \n')
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        Workspace.load(tmp_path)
    assert "line 1" in str(err.value)
    (tmp_path / FILENAME).write_bytes(b'[data]\ndata_path = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        Workspace.load(tmp_path)


def test_corrupt_workspace_through_cli(cli, tmp_path):
    (tmp_path / FILENAME).write_text('[data]\nbogus = 1\n')
    result = cli("env-check")
    assert result.exit_code == 1
    assert "unknown key 'bogus' in [data]" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("body,needle", [
    ('[checkpoint]\ntp = -3\n', "cogvx.toml:2: [checkpoint] tp must be at least 1"),
    ('[checkpoint]\npp_layers = [0, 42]\n', "cogvx.toml:2: [checkpoint] pp_layers must list"),
    ('[data]\n\nvariant = "t2v-9"\n', "cogvx.toml:3: [data] unknown variant 't2v-9'"),
    ('[workspace]\nbackend = "cuda"\n', "backend must be mindspeed or diffusers"),
    ('foo = 1\n[data]\n', "cogvx.toml:1: 'foo' is set outside any [section]"),
])
def test_values_are_validated_with_line(tmp_path, body, needle):
    (tmp_path / FILENAME).write_text(body)
    with pytest.raises(ConfigError) as err:
        Workspace.load(tmp_path)
    assert needle in str(err.value)
