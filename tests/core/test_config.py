"""Strict settings and dotted overrides."""

from __future__ import annotations

import pytest

from cogvideo_cli.core.config import (RunSettings, apply_overrides, parse_env,
                                      parse_overrides)
from cogvideo_cli.core.errors import UsageError


def _docs():
    return {"model": {"predictor": {"num_layers": 42, "input_size": [7, 60, 90],
                                    "dtype": "bf16", "pipeline_num_layers": None}},
            "data": {"dataloader_param": {"drop_last": True}},
            "args": {"lr": 1e-5}}


def test_override_changes_the_document_holding_the_key():
    docs = _docs()
    changed = apply_overrides(docs, parse_overrides([
        "predictor.num_layers=64", "dataloader_param.drop_last=false",
        "predictor.pipeline_num_layers=[32,32]", "args.log-interval=10"]), "model")
    assert docs["model"]["predictor"]["num_layers"] == 64
    assert docs["data"]["dataloader_param"]["drop_last"] is False
    assert docs["model"]["predictor"]["pipeline_num_layers"] == [32, 32]
    assert docs["args"]["log-interval"] == 10
    assert changed[0] == "model.predictor.num_layers"


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(UsageError) as err:
        apply_overrides(_docs(), parse_overrides(["predictor.num_layer=64"]), "model")
    assert "predictor.num_layers" in err.value.fix


def test_wrong_type_is_refused():
    with pytest.raises(UsageError) as err:
        apply_overrides(_docs(), parse_overrides(["predictor.num_layers=many"]), "model")
    assert "number" in err.value.message


def test_optional_keys_may_be_added():
    docs = _docs()
    apply_overrides(docs, parse_overrides(["dataloader_param.batch_size=2"]), "model",
                    {"data": {"dataloader_param.batch_size"}})
    assert docs["data"]["dataloader_param"]["batch_size"] == 2


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1"])
def test_malformed_override(item):
    with pytest.raises(UsageError):
        parse_overrides([item])


def test_bad_arg_name():
    with pytest.raises(UsageError):
        apply_overrides(_docs(), parse_overrides(["args.--lr=1"]), "model")


def test_env_parsing():
    assert parse_env(["A=1", "B_2=x=y"]) == {"A": "1", "B_2": "x=y"}
    with pytest.raises(UsageError):
        parse_env(["1A=2"])


def test_settings_are_strict():
    with pytest.raises(UsageError) as err:
        RunSettings.from_mapping({"tpp": 2})
    assert "'tp'" in err.value.fix
    assert RunSettings.from_mapping({"tp": 2}).tp == 2
