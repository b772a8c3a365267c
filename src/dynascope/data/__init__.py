"""Data layer: file readers, the task registry (splits, label maps, OOD suites) and user task specs.

Modules: ``readers`` (file formats), ``task`` (the ``Split``/``Task`` types), ``taskdef`` (which files make a
task, and building it), ``registry`` (the built-in tasks, the data root, ``load_task``), ``spec`` (user task
spec files), ``sampling`` (held-out tails, stratified subsets), ``manifest`` (file and SHA-256 checks).
Nothing here knows about models; tokenisation lives in :mod:`dynascope.data.encode`.
"""

from dynascope.data.manifest import task_status, verify_files
from dynascope.data.readers import (
    FORMATS,
    Record,
    read_fasttext,
    read_format,
    read_glue_tsv,
    read_jsonl,
    read_label_text,
    read_msr,
    read_text_label,
    read_tweeteval,
)
from dynascope.data.registry import ENV_VAR, load_task, resolve_data_dir, task_names
from dynascope.data.sampling import stratified_subset, tail_split
from dynascope.data.task import METRICS, Split, Task

__all__ = [
    "ENV_VAR",
    "FORMATS",
    "METRICS",
    "Record",
    "Split",
    "Task",
    "load_task",
    "read_fasttext",
    "read_format",
    "read_glue_tsv",
    "read_jsonl",
    "read_label_text",
    "read_msr",
    "read_text_label",
    "read_tweeteval",
    "resolve_data_dir",
    "stratified_subset",
    "tail_split",
    "task_names",
    "task_status",
    "verify_files",
]
