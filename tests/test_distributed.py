"""Two processes under ``torchrun`` (gloo, CPU) against one: the same training and the same kernel, a killed job
resumed to identical results, and a failing rank that ends the whole job with its error instead of a hang.

Tolerances. Training: two ranks each run half of every global batch and DDP averages their gradients, so the
float32 sums are taken in another order than one process's batch mean (and over differently padded half batches):
the runs agree to rounding, not bit for bit. After 8–12 AdamW steps we accept logits within 1e-4 of their scale
and train losses within 1e-5 relative, and require identical accuracies. Dropout is switched off (tiny model:
dropout 0; default model: ``--backbone-dropout 0``; both ``--head-dropout 0``) because each rank draws its own
masks. NTK: each tile is the same float64 Gram over a sub-block of rows, so the kernels agree to float64
rounding, 1e-12 of their largest entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from dynascope import runio
from tiny_models import tiny_bert_folder

DATA = os.environ.get("DYNASCOPE_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or not Path(DATA, "MANIFEST.tsv").exists(), reason="needs DYNASCOPE_DATA (real task files)"
)
HERE = Path(__file__).parent
TIMEOUT_S = 300  # a hung job fails the test instead of the suite


def env(**extra: str) -> dict[str, str]:
    # PYTHONFAULTHANDLER: a rank that aborts (SIGABRT from C++) prints its Python stack in the failure message
    return {**os.environ, "DYNASCOPE_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE),
            "PYTHONFAULTHANDLER": "1", **extra}


def one(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``dynascope args`` in one process."""
    return subprocess.run(
        [sys.executable, "-m", "dynascope", *args], env=env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )


def two(args: list[str], kill: tuple[str, int, str, int] | None = None) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 -m dynascope args``; ``kill`` = (file, count, after|raise, rank) arms
    ``killpoints`` on that rank."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    extra: dict[str, str] = {}
    if kill is None:
        cmd = [*launch, "-m", "dynascope", *args]
    else:
        name, count, when, rank = kill
        cmd = [*launch, str(HERE / "killpoints.py"), name, str(count), when, "--", *args]
        extra["DYNASCOPE_KILL_RANK"] = str(rank)
    return subprocess.run(cmd, env=env(**extra), capture_output=True, text=True, timeout=TIMEOUT_S)


def no_traceback_of_ours(stderr: str) -> None:
    """torchrun itself prints its ChildFailedError traceback when a rank fails; none may come from dynascope."""
    frames = [line for line in stderr.splitlines() if line.strip().startswith('File "')]
    assert not [f for f in frames if "dynascope" in f and "torch" not in f], frames


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny") / "bert", dropout=0.0)


def train_args(model: str | None, out: Path, *, epochs: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["train", "--task", "cb", "--method", "lp-ft", "--max-train", "64", "--max-eval", "32",
            "--epochs", str(epochs), "--batch-size", "16", "--head-dropout", "0", "--device", "cpu", *extra]
    return [*args, *(["--model", model] if model else []), "--out", str(out)]


def assert_same_training(a: Path, b: Path) -> None:
    la, lb = np.load(a / "logits.npz"), np.load(b / "logits.npz")
    for key in la.files:
        scale = max(1.0, float(np.abs(lb[key]).max()))
        np.testing.assert_allclose(la[key], lb[key], rtol=0, atol=1e-4 * scale, err_msg=key)
    ma, mb = runio.FINETUNE.load(a, "metrics"), runio.FINETUNE.load(b, "metrics")
    for split in ("val", "test"):
        assert ma[split]["accuracy"] == mb[split]["accuracy"], split
    np.testing.assert_allclose(
        [r["train_loss"] for r in ma["history"]], [r["train_loss"] for r in mb["history"]], rtol=1e-5
    )
    assert ma["best_epoch"] == mb["best_epoch"]


def test_two_process_training_equals_one_process_with_the_same_global_batch(model, tmp_path) -> None:
    single, double = tmp_path / "one", tmp_path / "two"
    ok(one(train_args(str(model), single, extra=("--lr", "1e-3"))))
    proc = two(train_args(str(model), double, extra=("--lr", "1e-3")))
    ok(proc)
    assert_same_training(double, single)
    assert runio.FINETUNE.load(double, "env")["world_size"] == 2
    assert runio.FINETUNE.load(double, "metrics")["world_size"] == 2
    assert "world_size" not in runio.FINETUNE.load(single, "env")
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    assert "val acc" in proc.stdout and proc.stdout.count("run directory:") == 1  # rank 0 alone prints


@pytest.mark.slow
def test_two_process_training_of_the_default_model_equals_one_process(tmp_path) -> None:
    single, double = tmp_path / "one", tmp_path / "two"
    extra = ("--backbone-dropout", "0", "--lr", "5e-5")
    ok(one(train_args(None, single, epochs=1, extra=extra)))
    ok(two(train_args(None, double, epochs=1, extra=extra)))
    assert_same_training(double, single)


def test_a_killed_two_process_training_resumes_from_the_epoch_checkpoint(model, tmp_path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    ok(two(train_args(str(model), ref, epochs=3, extra=("--lr", "1e-3"))))
    killed = two(train_args(str(model), run, epochs=3, extra=("--lr", "1e-3")), kill=("checkpoint.pt", 2, "after", 0))
    assert killed.returncode != 0
    assert (runio.FINETUNE.path(run, "checkpoint") / "checkpoint.pt").is_file() and not runio.FINETUNE.is_finished(run)
    resumed = two(train_args(str(model), run, epochs=3, extra=("--lr", "1e-3")))
    ok(resumed)
    for name in ("logits.npz", "features.npz"):
        a, b = np.load(ref / name), np.load(run / name)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), (name, key)
    assert runio.FINETUNE.load(run, "metrics")["history"] == [
        {**row, "seconds": got["seconds"]}
        for row, got in zip(runio.FINETUNE.load(ref, "metrics")["history"],
                            runio.FINETUNE.load(run, "metrics")["history"], strict=True)
    ]


def test_a_checkpoint_of_two_ranks_is_not_resumed_by_one_process(model, tmp_path) -> None:
    run = tmp_path / "run"
    args = train_args(str(model), run, epochs=3, extra=("--lr", "1e-3"))
    assert two(args, kill=("checkpoint.pt", 1, "after", 0)).returncode != 0
    refused = one(args)
    assert refused.returncode == 2
    assert "was written by 2 process(es), this job has 1" in refused.stderr


def test_an_indivisible_global_batch_is_a_one_line_error(model, tmp_path) -> None:
    proc = two(train_args(str(model), tmp_path / "odd", extra=("--lr", "1e-3", "--batch-size", "15")))
    assert proc.returncode != 0
    assert "--batch-size 15 is the global batch and must be divisible by the 2 processes" in proc.stderr
    no_traceback_of_ours(proc.stderr)


def ntk_args(model: Path, out: Path) -> list[str]:
    return ["ntk", "--task", "cb", "--model", str(model), "--state", "ft", "--n-train", "12", "--n-eval", "5",
            "--probes", "0", "--ntk-dtype", "float64", "--device", "cpu", "--seed", "3", "--out", str(out)]


def assert_same_kernels(a: Path, b: Path, rel: float) -> None:
    ka, kb = load_file(str(a / "kernels.safetensors")), load_file(str(b / "kernels.safetensors"))
    assert ka.keys() == kb.keys()
    for key in ka:
        scale = float(np.abs(kb[key]).max())
        assert float(np.abs(ka[key] - kb[key]).max()) <= rel * scale, key


def test_two_process_ntk_equals_the_single_process_kernel(model, tmp_path) -> None:
    ok(one(ntk_args(model, tmp_path / "one")))
    ok(two(ntk_args(model, tmp_path / "two")))
    assert_same_kernels(tmp_path / "two", tmp_path / "one", 1e-12)
    stats = runio.NTK.load(tmp_path / "two", "stats")
    assert stats["tiles"]["world_size"] == 2 and stats["tiles"]["tiles"] > 2
    assert not runio.NTK.path(tmp_path / "two", "blocks").exists()


def test_a_killed_two_process_ntk_resumes_to_the_identical_kernel(model, tmp_path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    ok(two(ntk_args(model, ref)))
    tile = "train.layer.01.attention.3-6.6-9.safetensors"  # the third of rank 1's five train tiles
    killed = two(ntk_args(model, run), kill=(tile, 1, "after", 1))
    assert killed.returncode != 0
    assert (runio.NTK.path(run, "blocks") / tile).is_file() and not runio.NTK.is_finished(run)
    ok(two(ntk_args(model, run)))
    assert_same_kernels(run, ref, 0.0)  # identical, not merely close
    fresh, resumed = (runio.NTK.load(where, "stats")["tiles"]["computed"] for where in (ref, run))
    assert resumed[1] < fresh[1]  # rank 1 reused the tiles it had finished before the kill
    assert not list(run.rglob("*.tmp"))


def test_a_failing_rank_ends_the_whole_job_with_its_error(model, tmp_path) -> None:
    tile = "train.layer.01.attention.3-6.6-9.safetensors"
    proc = two(ntk_args(model, tmp_path / "fail"), kill=(tile, 1, "raise", 1))
    assert proc.returncode != 0
    assert "dynascope (rank 1 of 2): error: injected failure writing" in proc.stderr
    no_traceback_of_ours(proc.stderr)
    assert not runio.NTK.is_finished(tmp_path / "fail")


def test_the_failure_of_rank_0_while_rank_1_waits_ends_the_job(model, tmp_path) -> None:
    proc = two(train_args(str(model), tmp_path / "fail", extra=("--lr", "1e-3")), kill=("checkpoint.pt", 1, "raise", 0))
    assert proc.returncode != 0
    assert "dynascope (rank 0 of 2): error: injected failure writing checkpoint.pt" in proc.stderr


def dynamics_args(boards: Path, out: Path) -> list[str]:
    return ["dynamics", "train", "--sudoku-dir", str(boards), "--width", "8", "--heads", "2", "--epochs", "2",
            "--batch-size", "10", "--loop-steps", "2", "--eval-steps", "2,4", "--device", "cpu", "--out", str(out)]


def test_two_process_looped_training_equals_one_process(tmp_path) -> None:
    from test_cli import write_boards

    boards = write_boards(tmp_path / "sudoku")
    single, double = tmp_path / "one", tmp_path / "two"
    ok(one(dynamics_args(boards, single)))
    ok(two(dynamics_args(boards, double)))
    wa, wb = load_file(str(double / "model.safetensors")), load_file(str(single / "model.safetensors"))
    for key in wb:  # same noise per board, same global batches: the EMA weights agree to float32 rounding
        np.testing.assert_allclose(wa[key], wb[key], rtol=0, atol=1e-5, err_msg=key)
    ma, mb = runio.LOOPED.load(double, "metrics"), runio.LOOPED.load(single, "metrics")
    np.testing.assert_allclose(ma["train_loss"], mb["train_loss"], rtol=1e-5)
    assert ma["board_accuracy"] == mb["board_accuracy"] and ma["world_size"] == 2


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two NCCL ranks need two GPUs")
def test_two_gpu_training_equals_one_gpu(model, tmp_path) -> None:
    args = lambda out: [a if a != "cpu" else "cuda" for a in train_args(str(model), out, extra=("--lr", "1e-3"))]  # noqa: E731
    ok(one(args(tmp_path / "one")))
    ok(two(args(tmp_path / "two")))
    assert_same_training(tmp_path / "two", tmp_path / "one")


def test_a_single_process_command_refuses_torchrun(tmp_path) -> None:
    proc = two(["sudoku", "build", "--easy-train", "30", "--easy-test", "10", "--out", str(tmp_path / "b")])
    assert proc.returncode != 0
    assert "'sudoku build' runs in one process: launch it without torchrun" in proc.stderr
    assert not (tmp_path / "b").exists()
