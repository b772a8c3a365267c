"""User task specs: a YAML/JSON file naming the format, raw labels and files of a task (see ``load_task``).

Every key is validated here, at the edge, with errors naming the file and the field; the result is a
``TaskDef`` whose file paths are relative to the spec's folder. What the YAML/JSON loaders would absorb
silently is refused: a key given twice, and unquoted no/yes/on/off under ``labels`` (YAML booleans).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dynascope.configfile import load_config_file
from dynascope.data.readers import FORMATS, SHOWN_CHARS, label_string
from dynascope.data.task import METRICS
from dynascope.data.taskdef import Part, TaskDef, file_parts
from dynascope.errors import DataError

SPEC_KEYS = (
    "name", "format", "text_field", "pair_field", "label_field", "labels", "label_names",
    "train", "val", "test", "ood", "near_id", "metrics",
)  # fmt: skip
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def _shown(value: Any) -> str:
    """``repr(value)`` cut to about 80 characters, so a message quoting a spec value stays one short line."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def _spec_name(value: Any, path: Path, key: str) -> str:
    """A task or set name: a non-empty, printable string of at most 80 characters (it appears in messages)."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable() or len(value) > SHOWN_CHARS:
        raise DataError(
            f"expected a non-empty printable name of at most {SHOWN_CHARS} characters, found {_shown(value)}",
            path=path,
            field=key,
        )
    return value


def _spec_files(value: Any, path: Path, key: str) -> tuple[str, ...]:
    """A spec's file entry: one path or a non-empty list (read one after another); relative to the spec."""
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f.strip() for f in files):
        raise DataError(
            f"expected a file path or a list of file paths, found {_shown(value)}", path=path, field=key
        )
    return tuple(files)


def _spec_str(spec: Mapping[str, Any], key: str, path: Path, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise DataError(f"expected a non-empty string, found {_shown(value)}", path=path, field=key)
    return value


def _spec_sets(
    spec: Mapping[str, Any], key: str, path: Path, parts: Callable[[tuple[str, ...]], tuple[Part, ...]]
) -> dict[str, tuple[Part, ...]]:
    """The ``ood``/``near_id`` entry of a spec: ``{NAME: FILE or [FILE, ...]}``."""
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"expected a mapping NAME: FILE, found {_shown(value)}", path=path, field=key)
    out = {}
    for name, files in value.items():
        _spec_name(name, path, key)
        out[name] = parts(_spec_files(files, path, f"{key}.{name}"))
    return out


def _check_yaml_labels(path: Path) -> None:
    """Refuse unquoted YAML words such as no/yes/on/off under ``labels``: YAML reads them as booleans, not as the
    labels written in the files (duplicate keys and syntax are the config-file reader's job)."""
    if path.suffix.lower() == ".json":
        return
    import yaml

    root = yaml.compose(path.read_text(encoding="utf-8-sig"), Loader=yaml.SafeLoader)
    labels = next((v for k, v in root.value if k.value == "labels"), None)
    if isinstance(labels, yaml.SequenceNode):
        words = [
            n.value
            for n in labels.value
            if n.tag == "tag:yaml.org,2002:bool" and n.value.lower() not in ("true", "false")
        ]
        if words:
            read = ", ".join(label_string(yaml.SafeLoader.bool_values[w.lower()]) for w in words)
            raise DataError(
                f"YAML reads unquoted no/yes/on/off as booleans: {', '.join(words)} became {read}; "
                f"quote them ({', '.join(repr(w) for w in words)}) to mean the labels written in the files",
                path=path,
                line=labels.start_mark.line + 1,
                field="labels",
            )


def load_spec(path: Path) -> TaskDef:
    """Validate a user task spec (every key, at the edge) and turn it into a task definition."""
    spec = load_config_file(path, "task spec")
    _check_yaml_labels(path)
    for key in spec:
        if key not in SPEC_KEYS:
            raise DataError(
                f"unknown key {_shown(key)}; allowed keys: {', '.join(SPEC_KEYS)}", path=path, field=str(key)[:40]
            )
    for key in ("name", "format", "labels", "train", "test"):
        if key not in spec:
            raise DataError("required key is missing", path=path, field=key)
    name = _spec_name(spec["name"], path, "name")
    fmt = _spec_str(spec, "format", path)
    if fmt not in FORMATS:
        raise DataError(
            f"unknown format {_shown(fmt)}; expected one of {', '.join(FORMATS)}", path=path, field="format"
        )
    named = fmt in ("jsonl", "glue-tsv")
    for key in ("text_field", "pair_field", "label_field"):
        if key in spec and not named:
            raise DataError(
                f"format {fmt!r} has fixed columns; {key} applies to jsonl and glue-tsv only",
                path=path,
                field=key,
            )
    if named and "text_field" not in spec:
        raise DataError(
            f"format {fmt!r} needs text_field (the column or key of the text)", path=path, field="text_field"
        )
    text_field = _spec_str(spec, "text_field", path)
    pair_field = _spec_str(spec, "pair_field", path)
    label_field = _spec_str(spec, "label_field", path, "label") if named else "label"

    raw = spec["labels"]
    try:
        labels = [label_string(v) for v in raw] if isinstance(raw, list) else None
    except TypeError:
        labels = None
    if labels is None or len(labels) < 2 or len(set(labels)) != len(labels):
        raise DataError(
            f"expected a list of at least 2 distinct labels (strings, integers or booleans) as "
            f"written in the files, found {_shown(raw)}",
            path=path,
            field="labels",
        )
    names = spec.get("label_names", labels)
    valid = isinstance(names, list) and all(isinstance(v, str) and v.strip() for v in names)
    if not valid or len(names) != len(labels) or len(set(names)) != len(names):
        booleans = isinstance(names, list) and any(isinstance(v, bool) for v in names)
        hint = " (quote them: YAML reads yes/no/on/off as booleans)" if booleans else ""
        raise DataError(
            f"expected {len(labels)} distinct non-empty names, one per label, found {_shown(names)}{hint}",
            path=path,
            field="label_names",
        )
    metrics = spec.get("metrics", [])
    if not isinstance(metrics, list) or any(m not in METRICS for m in metrics):
        raise DataError(
            f"expected a list drawn from {list(METRICS)}, found {_shown(metrics)}", path=path, field="metrics"
        )

    def parts(files: tuple[str, ...]) -> tuple[Part, ...]:
        fields = (
            {"text_field": text_field, "pair_field": pair_field, "label_field": label_field} if named else {}
        )
        return file_parts(fmt, *files, **fields)

    return TaskDef(
        name=name,
        label_names=tuple(names),
        label_map={raw_label: i for i, raw_label in enumerate(labels)},
        train=parts(_spec_files(spec["train"], path, "train")),
        val=parts(_spec_files(spec["val"], path, "val")) if "val" in spec else None,
        test=parts(_spec_files(spec["test"], path, "test")),
        ood=_spec_sets(spec, "ood", path, parts),
        near_id=_spec_sets(spec, "near_id", path, parts),
        metrics=tuple(metrics),
        note=f"user task spec {path.name}",
    )
