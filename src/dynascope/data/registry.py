"""The task registry: which files make each built-in task, how they split into train/val/test, and its OOD suites.

Splits follow the LP-FT NTK paper (Tomihari & Sato 2024, §5.1): the original training file is split 9:1 as
``train_test_split(test_size=0.1, shuffle=False)`` does, so validation is the *last* ``ceil(0.1 n)`` rows of
the file and nothing is shuffled; the original validation/dev file becomes the test set. Exceptions, from the
shared data README:

- ``sst2`` trains on all of GLUE SST-2 train (67349), validates on GLUE dev (872) and tests on the 1821 SST
  test sentences (``sentence/sst2/dev.tsv``). OOD: CR (both files) and UCI Amazon. MR is reported as
  *near-ID*, never as OOD: SST was built from the same Rotten Tomatoes snippets, 5,635 MR snippets occur
  verbatim in SST-2 train and 731 of the 872 GLUE dev sentences are in MR, so MR accuracy measures in-domain
  recall, not robustness to a shift.
- ``sst5``/``sst5-3`` use SST-5's own train/dev/test; ``sst5-3`` maps 1-2 to negative, 3 to neutral, 4-5 to
  positive and has TweetEval sentiment test (SemEval-2017 4A) as OOD.
- ``semeval17`` has no train file here (TweetEval's train tweets are missing), so its train/val are the 9:1
  split of TweetEval's validation files and its test is TweetEval test.
- ``amazon-uci`` is a single 1000-row file: test is its last 10 %, val the 10 % before that, train the rest.

The data root comes from ``--data-dir`` or ``$DYNASCOPE_DATA``. :func:`load_task` builds a registered task, or
a user task from a YAML/JSON spec file (:mod:`dynascope.data.spec`) whose file paths are relative to the spec.
"""

from __future__ import annotations

import os
from pathlib import Path

from dynascope.data.readers import shorten
from dynascope.data.sampling import limit_train
from dynascope.data.spec import SPEC_SUFFIXES, load_spec
from dynascope.data.task import Task
from dynascope.data.taskdef import TaskDef, build_task, file_parts
from dynascope.errors import ConfigError, DataError
from dynascope.validation import check_int

ENV_VAR = "DYNASCOPE_DATA"
_ROOT_HINT = f"set the data root with --data-dir or the {ENV_VAR} environment variable"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data root: ``data_dir`` if given, else ``$DYNASCOPE_DATA``; it must be an existing directory."""
    if data_dir is not None and str(data_dir) != "":
        origin, value = "--data-dir", str(data_dir)
    else:
        value = os.environ.get(ENV_VAR, "")
        origin = f"${ENV_VAR}"
        if not value:
            raise DataError(f"no data root given; {_ROOT_HINT} (for example {ENV_VAR}=/path/to/data)")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} (from {origin}) is not a directory; {_ROOT_HINT}")
    return root


_BINARY = ("negative", "positive")
_BINARY_MAP = {"0": 0, "1": 1}
_SST5_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")
_THREE = ("negative", "neutral", "positive")
_TWEETEVAL_MAP = {"0": 0, "1": 1, "2": 2}


def _sentence_task(name: str, label_names: tuple[str, ...] = _BINARY, note: str = "") -> TaskDef:
    folder = f"sentence/{name}"
    return TaskDef(
        name,
        label_names,
        _BINARY_MAP,
        train=file_parts("label-text", f"{folder}/train.tsv"),
        test=file_parts("label-text", f"{folder}/dev.tsv"),
        note=note or f"{folder}: train.tsv split 9:1 (val = last 10 %), dev.tsv as test",
    )


REGISTRY: dict[str, TaskDef] = {
    t.name: t
    for t in (
        TaskDef(
            "cb",
            ("entailment", "contradiction", "neutral"),
            {"entailment": 0, "contradiction": 1, "neutral": 2},
            train=file_parts("jsonl", "superglue/cb/train.jsonl", text_field="premise", pair_field="hypothesis"),
            test=file_parts("jsonl", "superglue/cb/val.jsonl", text_field="premise", pair_field="hypothesis"),
            metrics=("macro_f1",),
            note="SuperGLUE CB (premise, hypothesis): train 9:1 -> 225/25 (the last 25 rows hold no neutral "
            "example), SuperGLUE val (56) as test",
        ),
        TaskDef(
            "rte",
            ("entailment", "not_entailment"),
            {"entailment": 0, "not_entailment": 1},
            train=file_parts("glue-tsv", "glue/rte/train.tsv", text_field="sentence1", pair_field="sentence2"),
            test=file_parts("glue-tsv", "glue/rte/dev.tsv", text_field="sentence1", pair_field="sentence2"),
            note="GLUE RTE (premise, hypothesis): train 9:1 -> 2241/249, dev (277) as test",
        ),
        TaskDef(
            "sst2",
            _BINARY,
            _BINARY_MAP,
            train=file_parts("glue-tsv", "glue/sst2/train.tsv", text_field="text"),
            val=file_parts("glue-tsv", "glue/sst2/dev.tsv", text_field="text"),
            test=file_parts("label-text", "sentence/sst2/dev.tsv"),
            ood={
                "cr": file_parts("label-text", "sentence/cr/train.tsv", "sentence/cr/dev.tsv"),
                "amazon-uci": file_parts("text-label", "uci_sentiment/amazon_cells_labelled.txt"),
            },
            near_id={"mr": file_parts("label-text", "sentence/mr/train.tsv", "sentence/mr/dev.tsv")},
            note="GLUE SST-2 train (all) / GLUE dev / SST test sentences; OOD cr, amazon-uci; "
            "MR near-ID (shares Rotten Tomatoes snippets with SST), never OOD",
        ),
        _sentence_task("mr"),
        _sentence_task("cr"),
        _sentence_task("mpqa"),
        _sentence_task(
            "subj",
            ("subjective", "objective"),
            "sentence/subj (0 subjective, 1 objective): train 9:1, dev.tsv as test",
        ),
        TaskDef(
            "cola",
            ("unacceptable", "acceptable"),
            _BINARY_MAP,
            train=file_parts("text-label", "sentence/cola/train.tsv"),
            test=file_parts("text-label", "sentence/cola/dev.tsv"),
            metrics=("mcc",),
            note="CoLA: train 9:1, dev (516, out-of-domain part only) as test",
        ),
        TaskDef(
            "mrpc",
            ("not_paraphrase", "paraphrase"),
            _BINARY_MAP,
            train=file_parts("msr", "mrpc/msr_paraphrase_train.txt"),
            test=file_parts("msr", "mrpc/msr_paraphrase_test.txt"),
            metrics=("f1",),
            note="MSR paraphrase (#1 String, #2 String): train 9:1, original test (1725) as test",
        ),
        TaskDef(
            "sst5",
            _SST5_NAMES,
            {str(k): k - 1 for k in range(1, 6)},
            train=file_parts("fasttext", "sst5/sst_train.txt"),
            val=file_parts("fasttext", "sst5/sst_dev.txt"),
            test=file_parts("fasttext", "sst5/sst_test.txt"),
            note="SST-5 sentences: train/dev/test as given",
        ),
        TaskDef(
            "sst5-3",
            _THREE,
            {"1": 0, "2": 0, "3": 1, "4": 2, "5": 2},
            train=file_parts("fasttext", "sst5/sst_train.txt"),
            val=file_parts("fasttext", "sst5/sst_dev.txt"),
            test=file_parts("fasttext", "sst5/sst_test.txt"),
            ood={
                "semeval17": file_parts(
                    "tweeteval",
                    "tweeteval/sentiment/test_text.txt",
                    "tweeteval/sentiment/test_labels.txt",
                    label_map=_TWEETEVAL_MAP,
                )
            },
            note="SST-5 mapped 1-2 negative, 3 neutral, 4-5 positive; OOD semeval17 (TweetEval test)",
        ),
        TaskDef(
            "semeval17",
            _THREE,
            _TWEETEVAL_MAP,
            train=file_parts("tweeteval", "tweeteval/sentiment/val_text.txt", "tweeteval/sentiment/val_labels.txt"),
            test=file_parts(
                "tweeteval", "tweeteval/sentiment/test_text.txt", "tweeteval/sentiment/test_labels.txt"
            ),
            note="TweetEval sentiment (SemEval-2017 4A): val files split 9:1 (no train tweets here), test",
        ),
        TaskDef(
            "amazon-uci",
            _BINARY,
            _BINARY_MAP,
            train=file_parts("text-label", "uci_sentiment/amazon_cells_labelled.txt"),
            test=None,
            note="UCI Amazon (one file, file order): test = last 10 %, val = the 10 % before, train = rest",
        ),
    )
}


def task_names() -> list[str]:
    """Names of the registered tasks, in registry order."""
    return list(REGISTRY)


def load_task(
    name_or_spec: str, data_dir: str | Path | None = None, *, max_train: int | None = None, seed: int = 0
) -> Task:
    """Build a task by registered name (files under the data root) or from a YAML/JSON task spec file.

    A spec holds ``name``, ``format`` (one of ``FORMATS``), ``labels`` (the raw labels as written in the
    files, in class-index order), ``train`` and ``test`` (a path or list of paths relative to the spec), and
    optionally ``val`` (else the last 10 % of train), ``label_names``, ``text_field``/``pair_field``/
    ``label_field`` (jsonl and glue-tsv only; ``label_field`` defaults to ``label``), ``ood`` and ``near_id``
    (``{NAME: FILE}``) and ``metrics``. Unknown keys are an error.

    ``data_dir`` (else ``$DYNASCOPE_DATA``) is the root of registered tasks; a spec ignores it.
    ``max_train`` keeps a stratified, seeded subset of train; val, test and the OOD sets are untouched.
    """
    if max_train is not None:
        check_int(max_train, "max_train")
    if name_or_spec in REGISTRY:
        root = resolve_data_dir(data_dir)
        task = build_task(REGISTRY[name_or_spec], root, f"expected under the data root {root}; {_ROOT_HINT}")
    else:
        try:
            path = Path(name_or_spec).expanduser()
            is_file = path.is_file()
        except (OSError, RuntimeError) as exc:  # a name too long to look up, an unknown ~user
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"task {shorten(name_or_spec)}: cannot look it up as a spec file: {reason}") from None
        if path.suffix.lower() not in SPEC_SUFFIXES and not is_file:
            raise ConfigError(
                f"unknown task {shorten(name_or_spec)}; known tasks: {', '.join(REGISTRY)} "
                f"(or give the path of a task spec file: {', '.join(SPEC_SUFFIXES)})"
            )
        defn = load_spec(path)
        task = build_task(defn, path.parent, f"paths in task spec {path} are relative to its folder")
    return limit_train(task, max_train, seed)
