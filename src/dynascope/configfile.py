"""Read a YAML or JSON file that holds one mapping: command settings (``--config``) and user task specs.

A ``.json`` file is read as JSON, anything else as YAML (a superset of JSON). Errors are ``DataError`` naming
the file and, for syntax errors, the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dynascope.errors import DataError


def _parse(file: Path, text: str) -> Any:
    """The content of ``text`` as JSON (``.json``) or YAML (anything else)."""
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=file, line=exc.lineno) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"invalid YAML: {problem}", path=file, line=line) from None


def load_config_file(path: str | Path, what: str = "settings") -> dict[str, Any]:
    """The mapping held by the YAML/JSON file ``path``; ``what`` names its content in error messages."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{what} file not found", path=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the {what} file: {exc}", path=file) from None
    data = _parse(file, text)
    if not isinstance(data, dict):
        found = type(data).__name__
        raise DataError(f"expected a mapping at the top level of the {what} file, found {found}", path=file)
    return data
