"""Read a YAML or JSON file that holds one mapping: command settings (``--config``) and user task specs.

A ``.json`` file is read as JSON, anything else as YAML (a superset of JSON). Errors are one-line ``DataError``s
naming the file and, where known, the line: syntax errors, values that do not construct (the date 2001-02-30),
nesting too deep to read, and a key given twice in one mapping (both loaders would silently keep the last).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dynascope.errors import DataError


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[:limit] + "..."


def _unique_json(file: Path) -> Any:
    """An ``object_pairs_hook`` that refuses a key given twice in one JSON object."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise DataError(
                    f"key {_first_line(repr(key), 60)} appears twice in one object", path=file, field=key[:40]
                )
            obj[key] = value
        return obj

    return hook


def _yaml_duplicate_keys(file: Path, text: str) -> None:
    """Refuse a key given twice in one YAML mapping, naming both lines (``safe_load`` keeps the last)."""
    import yaml

    stack, seen = [yaml.compose(text, Loader=yaml.SafeLoader)], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:  # an empty document, or an alias to a node already walked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if (key.tag, key.value) in lines:
                        raise DataError(
                            f"key {_first_line(repr(key.value), 60)} appears twice (lines "
                            f"{lines[key.tag, key.value]} and {line}); YAML would keep only the last",
                            path=file,
                            line=line,
                            field=key.value[:40],
                        )
                    lines[key.tag, key.value] = line
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _parse(file: Path, text: str) -> Any:
    """The content of ``text`` as JSON (``.json``) or YAML (anything else)."""
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text, object_pairs_hook=_unique_json(file))
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=file, line=exc.lineno) from None
    import yaml

    try:
        data = yaml.safe_load(text)
        _yaml_duplicate_keys(file, text)
        return data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"invalid YAML: {_first_line(problem)}", path=file, line=line) from None


def load_config_file(path: str | Path, what: str = "settings") -> dict[str, Any]:
    """The mapping held by the YAML/JSON file ``path``; ``what`` names its content in error messages."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{what} file not found", path=file) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise DataError(f"cannot read the {what} file: {exc}", path=file) from None
    try:
        data = _parse(file, text)
    except RecursionError:
        raise DataError(f"cannot read the {what} file: it is nested too deeply", path=file) from None
    except DataError:
        raise
    except ValueError as exc:  # a scalar that does not construct (YAML's 2001-02-30), a too-long integer
        raise DataError(f"cannot read the {what} file: {_first_line(str(exc))}", path=file) from None
    if not isinstance(data, dict):
        found = type(data).__name__
        raise DataError(f"expected a mapping at the top level of the {what} file, found {found}", path=file)
    return data
