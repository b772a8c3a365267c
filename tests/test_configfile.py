"""YAML/JSON config files: one mapping, errors naming the file and the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dynascope.commands.common import load_config_file as command_loader
from dynascope.configfile import load_config_file
from dynascope.errors import DataError


def test_reads_yaml_json_and_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("epochs: 2\nlp:\n  protocol: gd\n", encoding="utf-8")
    (tmp_path / "b.json").write_text('\ufeff{"epochs": 2, "lp": {"protocol": "gd"}}', encoding="utf-8")
    expected = {"epochs": 2, "lp": {"protocol": "gd"}}
    assert load_config_file(tmp_path / "a.yaml") == expected
    assert load_config_file(str(tmp_path / "b.json")) == expected
    assert command_loader is load_config_file


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.json: run settings file not found"):
        load_config_file(tmp_path / "nope.json", "run settings")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"a": 1,\n "b": }', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:2: invalid JSON: Expecting value at column 7") as info:
        load_config_file(bad_json)
    assert info.value.line == 2
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("a: 1\nb: [1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.yml:3: invalid YAML"):
        load_config_file(bad_yaml)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected a mapping at the top level of the NTK settings file, found list"):
        load_config_file(listed, "NTK settings")


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("dup.yaml", "lr: 1e-3\nepochs: 2\nlr: 1e-4\n", "key 'lr' appears twice (lines 1 and 3)"),
        ("dup.json", '{"lr": 0.001, "lr": 0.0001}', "key 'lr' appears twice"),
        ("date.yaml", "when: 2001-02-30\n", "cannot read the settings file"),
        ("deep.yaml", "a: " + "[" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_settings_files_that_loaders_would_absorb_are_one_line_errors(tmp_path, name, text, fragment) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        load_config_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
