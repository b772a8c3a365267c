"""Kill -9 at chosen points of real child processes, then rerun: the outputs equal an uninterrupted run's, no
temporary file survives, and a killed ``--overwrite`` never looks finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from dynascope import runio
from tiny_models import tiny_bert_folder

DATA = os.environ.get("DYNASCOPE_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or not Path(DATA, "MANIFEST.tsv").exists(), reason="needs DYNASCOPE_DATA (real task files)"
)
HERE = Path(__file__).parent


def dynascope(args: list[str], kill: tuple[str, int, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dynascope args`` in a child process, optionally SIGKILLed at ``kill`` = (file name, count, when)."""
    env = {**os.environ, "DYNASCOPE_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    if kill is None:
        cmd = [sys.executable, "-m", "dynascope", *args]
    else:
        name, count, when = kill
        cmd = [sys.executable, str(HERE / "killpoints.py"), name, str(count), when, "--", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def killed(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == -signal.SIGKILL


def arrays(run: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every array of the named .npz / .safetensors files of a run."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        path = run / name
        if name.endswith(".npz"):
            with np.load(path) as data:
                out |= {f"{name}:{k}": data[k] for k in data.files}
        else:
            out |= {f"{name}:{k}": v for k, v in load_file(str(path)).items()}
    return out


def same_arrays(a: Path, b: Path, names: tuple[str, ...]) -> None:
    x, y = arrays(a, names), arrays(b, names)
    assert x.keys() == y.keys()
    for key in x:
        assert np.array_equal(x[key], y[key]), key


def no_temporaries(run: Path) -> None:
    assert not list(run.rglob(".*.tmp")), list(run.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_bert_folder(tmp_path_factory.mktemp("models") / "bert")


def ft_args(model: Path, out: Path, method: str = "ft") -> list[str]:
    return ["train", "--task", "cb", "--model", str(model), "--method", method, "--epochs", "3", "--max-train", "48",
            "--max-eval", "16", "--lr", "1e-3", "--batch-size", "8", "--seed", "7", "--out", str(out)]


FT_OUTPUTS = ("logits.npz", "features.npz", "head.safetensors")


def test_ft_killed_after_a_checkpoint_and_during_the_final_writes_resumes_identically(model, tmp_path) -> None:
    ref = tmp_path / "ref"
    assert dynascope(ft_args(model, ref)).returncode == 0
    for name, count, when in (("checkpoint.pt", 1, "after"), ("features.npz", 1, "before")):
        run = tmp_path / f"{name}-{when}"
        assert killed(dynascope(ft_args(model, run), kill=(name, count, when)))
        assert not runio.FINETUNE.is_finished(run)
        if when == "before":
            assert list(run.glob(f".{name}.*.tmp")), "the kill left the temporary file behind"
        done = dynascope(ft_args(model, run))
        assert done.returncode == 0, done.stderr
        same_arrays(ref, run, FT_OUTPUTS)
        no_temporaries(run)
        a, b = runio.FINETUNE.load(ref, "metrics"), runio.FINETUNE.load(run, "metrics")
        untimed = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
        assert a["test"] == b["test"] and untimed(a["history"]) == untimed(b["history"])


def test_a_killed_overwrite_never_looks_finished_and_a_changed_resume_is_refused(model, tmp_path) -> None:
    run = tmp_path / "run"
    assert dynascope(ft_args(model, run, method="lp")).returncode == 0
    assert killed(dynascope([*ft_args(model, run, method="ft"), "--overwrite"], kill=("checkpoint.pt", 1, "after")))
    assert not runio.FINETUNE.is_finished(run), "the old lp metrics.json must be gone"
    refused = dynascope(ft_args(model, run, method="lp"))
    assert refused.returncode == 2 and "method: 'ft' -> 'lp'" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    more = dynascope([*ft_args(model, run, method="ft")[:-2], "--max-train", "64", "--out", str(run)])
    assert more.returncode == 2 and "max_train: 48 -> 64" in more.stderr
    assert dynascope(ft_args(model, run, method="ft")).returncode == 0
    assert runio.FINETUNE.load(run, "metrics")["method"] == "ft"


def test_ntk_killed_between_tiles_resumes_to_the_identical_kernel(model, tmp_path) -> None:
    args = ["ntk", "--task", "cb", "--model", str(model), "--state", "ft", "--n-train", "4", "--n-eval", "2",
            "--probes", "0", "--memory-gb", "0.00001", "--seed", "3"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert dynascope([*args, "--out", str(ref)]).returncode == 0
    tile = "train.layer.01.attention.safetensors"  # a block kernel finished midway through the run
    assert killed(dynascope([*args, "--out", str(run)], kill=(tile, 1, "after")))
    assert (runio.NTK.path(run, "blocks") / tile).is_file()
    assert not runio.NTK.is_finished(run)
    done = dynascope([*args, "--out", str(run)])
    assert done.returncode == 0, done.stderr
    same_arrays(ref, run, ("kernels.safetensors",))
    no_temporaries(run)


def test_dynamics_training_killed_after_an_epoch_resumes_identically(tmp_path) -> None:
    from test_cli import write_boards

    boards = write_boards(tmp_path / "sudoku")
    args = ["dynamics", "train", "--sudoku-dir", str(boards), "--width", "8", "--heads", "2", "--epochs", "3",
            "--batch-size", "10", "--loop-steps", "2", "--eval-steps", "2", "--threads", "1"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert dynascope([*args, "--out", str(ref)]).returncode == 0
    assert killed(dynascope([*args, "--out", str(run)], kill=("checkpoint.pt", 2, "after")))
    assert dynascope([*args, "--out", str(run)]).returncode == 0
    same_arrays(ref, run, ("model.safetensors",))
    assert runio.LOOPED.load(ref, "metrics")["train_loss"] == runio.LOOPED.load(run, "metrics")["train_loss"]


def test_sudoku_build_killed_between_splits_resumes_identically(tmp_path) -> None:
    args = ["sudoku", "build", "--easy-train", "30", "--easy-test", "10", "--hard-train", "30", "--hard-valid", "10",
            "--hard-test", "10"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert dynascope([*args, "--out", str(ref)]).returncode == 0
    assert killed(dynascope([*args, "--out", str(run)], kill=("easy_test.npz", 1, "before")))
    assert dynascope([*args, "--out", str(run)]).returncode == 0
    splits = tuple(sorted(p.name for p in ref.glob("*.npz")))
    same_arrays(ref, run, splits)
    no_temporaries(run)
