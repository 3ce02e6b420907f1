"""Typed configs are the one source of every default: CLI flags take their type, default and help
from the config fields, and untrusted values are checked by pydantic with one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from popsteer.app.cli import COMMANDS, build_parser
from popsteer.app.flags import UNSET, _field
from popsteer.errors import PopSteerError
from popsteer.util.configs import field_docs, validate


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", list(COMMANDS))
def test_flags_take_default_and_help_from_the_config_field(name):
    command, parser = COMMANDS[name], _subparsers()[name]
    actions = {a.dest: a for a in parser._actions}
    for flag in command.flags:
        owner, f, _ = _field(command.config, flag.path)
        action = actions[flag.path.rsplit(".", 1)[-1] if flag.positional else flag.dest]
        doc = field_docs(owner)[f.name]
        if flag.help is None and doc:
            assert action.help.startswith(doc), (flag.path, action.help, doc)
        if flag.default is UNSET and flag.action != "append" and not flag.positional:
            want = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            assert action.default == want or (want is None and action.required), (flag.path, action.default, want)


def test_the_default_seed_is_written_once():
    package = Path(__file__).resolve().parents[1] / "popsteer"
    places = [f"{p.relative_to(package)}:{i}" for p in package.rglob("*.py")
              for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\b2020\b", line)]
    assert len(places) == 1 and places[0].startswith("util/configs.py:"), places


def test_cli_builds_the_config_the_flags_say():
    from popsteer.app.flags import config_from

    command = COMMANDS["train-sae"]
    ns = _subparsers()["train-sae"].parse_args(["-p", "base.safetensors", "--top_k", "8", "--epochs", "12",
                                                "--prefix-stride", "5", "--out-dir", "elsewhere"])
    cfg = config_from(command.config, ns, command.flags)
    assert (cfg.base, cfg.sae.k, cfg.sae.scale, cfg.sae.max_epochs, cfg.sae.min_epochs) == ("base.safetensors", 8, 64, 12, 12)
    assert cfg.encode.prefix_stride == 5 and cfg.where.out_dir == "elsewhere" and cfg.where.data_dir == "datasets"


@pytest.mark.parametrize("values,message", [
    ({"trainer": "magic"}, "unknown trainer 'magic'"),
    ({"epochs": "3"}, "key 'epochs' has the wrong type ('3'"),
    ({"epochs": True}, "key 'epochs' has the wrong type (True"),
    ({"epoch": 3}, "unknown key 'epoch'"),
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
])
def test_untrusted_values_get_one_line_errors(values, message):
    from popsteer.models.config import TrainConfig

    with pytest.raises(PopSteerError) as exc:
        validate(TrainConfig, values, "header.json")
    assert str(exc.value).startswith("header.json: ") and message in str(exc.value) and "\n" not in str(exc.value)
    assert validate(TrainConfig, {"learning_rate": 1, "epochs": 3}, "x").learning_rate == 1.0  # an int is a float
