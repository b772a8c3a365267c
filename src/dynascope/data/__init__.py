"""Data layer: file readers, the task registry (splits, label maps, OOD suites) and user task specs.

Nothing here knows about models; tokenisation lives in :mod:`dynascope.data.encode`.
"""

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
from dynascope.data.tasks import (
    ENV_VAR,
    METRICS,
    Split,
    Task,
    load_task,
    resolve_data_dir,
    stratified_subset,
    tail_split,
    task_names,
    task_status,
    verify_files,
)

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
