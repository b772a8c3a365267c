"""Flags shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dynascope.errors import ConfigError


def add_common(parser: argparse.ArgumentParser, *, data: bool = True, out: bool = True) -> None:
    """Add ``--data-dir``, ``--out``, ``--overwrite`` and ``--quiet`` as a command needs them."""
    if data:
        parser.add_argument(
            "--data-dir",
            default=None,
            help="data root (default: $DYNASCOPE_DATA)",
        )
    if out:
        parser.add_argument("--out", required=True, help="output directory of the run")
        parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")


def load_config_file(path: str, what: str = "settings") -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file holding a mapping; errors name the file (and line for JSON)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    text = file.read_text(encoding="utf-8")
    if file.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: invalid YAML ({exc})") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of {what}, found {type(data).__name__}")
    return data
