"""Devices and precision: one resolver (``auto`` → CUDA when available; an unavailable CUDA device is an error,
never a silent fallback), ``--device cpu`` changes no bit, bf16/fp16 training, ``--ntk-dtype float64``, and the
CUDA checks (marked ``cuda``: skipped here, run on a GPU machine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dynamics.test_train import ID, OOD, TRAIN
from dynamics.test_train import tiny as tiny_looped
from dynascope.cli import main
from dynascope.data import load_task
from dynascope.data.encode import collate, encode_split
from dynascope.device import autocast, grad_scaler, resolve_device
from dynascope.dynamics.train import TrainConfig, train_run
from dynascope.errors import ConfigError
from dynascope.models import Classifier, load_backbone
from dynascope.ntk.components import ntk_components
from dynascope.ntk.functional import kernel_model
from dynascope.pipelines.ntk import NTKConfig, run_ntk
from dynascope.runio import FINETUNE, LOOPED, NTK
from dynascope.train.finetune import FinetuneSettings, finetune
from dynascope.train.recipes import RunConfig, run
from ntk.test_resume import _toy_task
from ntk.tiny_ntk import brute_force_ntk, rel_err, tiny_batch, tiny_classifier
from test_cli import assert_one_line, run_cli, write_boards
from test_finetune import tiny_classifier as tiny_bert_classifier
from test_finetune import toy_data
from tiny_models import tiny_bert_folder

DATA = os.environ.get("DYNASCOPE_DATA")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA, "MANIFEST.tsv").exists(), reason="needs DYNASCOPE_DATA")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA")
UNAVAILABLE = r"^dynascope: error: device 'cuda': CUDA is not available on this machine"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_folder(tmp_path_factory.mktemp("models") / "bert")


@pytest.fixture(scope="module")
def toy_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _toy_task(tmp_path_factory.mktemp("toy"))


def ft_config(model: Path, **fields: object) -> RunConfig:
    """One short FT epoch on CB with the tiny encoder."""
    base = dict(task="cb", method="ft", model=str(model), epochs=1, max_train=32, max_eval=16, lr=1e-3, batch_size=16)
    return RunConfig(**{**base, **fields})


# --- the resolver -------------------------------------------------------------------------------------------


@no_cuda
def test_auto_is_the_cpu_here_and_an_explicit_cuda_is_an_error() -> None:
    assert resolve_device() == resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
            resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "cpu:0", "cuda:x", "auto:1", "", "CUDA"])
def test_a_malformed_device_is_an_error(name: str) -> None:
    with pytest.raises(ConfigError, match=r"device: expected auto \| cpu \| cuda \| cuda:N"):
        resolve_device(name)


def test_a_cuda_index_out_of_range_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:1")


def test_fp32_enters_no_autocast_and_only_fp16_scales() -> None:
    cpu = torch.device("cpu")
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert [grad_scaler(cpu, p).is_enabled() for p in ("fp32", "bf16", "fp16")] == [False, False, True]
    with pytest.raises(ConfigError, match="precision: expected one of fp32, bf16, fp16"):
        autocast(cpu, "fp8")


@no_cuda
@pytest.mark.parametrize(
    "argv",
    [
        "train --task cb --method ft --device cuda --out {out}",
        "compare --task cb --methods ft --seeds 1 --device cuda --out {out}",
        "scale-head --task cb --methods ft --device cuda --out {out}",
        "ntk --task cb --state ft --device cuda --out {out}",
        "dynamics train --sudoku-dir {sudoku} --width 8 --heads 2 --device cuda --out {out}",
        "dynamics analyze {out} --device cuda",
        "reproduce lpft --device cuda --out {out}",
        "reproduce dynamics --device cuda --out {out}",
    ],
)
def test_the_cli_refuses_an_unavailable_cuda_in_one_line(
    argv: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sudoku = write_boards(tmp_path / "sudoku") if "{sudoku}" in argv else None
    out = tmp_path / "run"
    rc, err = run_cli(argv.format(out=out, sudoku=sudoku).split(), capsys)
    assert_one_line(rc, err, UNAVAILABLE)
    assert rc == 2
    if argv.startswith(("train", "ntk", "dynamics train", "reproduce")):
        assert not out.exists()  # refused before anything was written


# --- the CPU path is unchanged -------------------------------------------------------------------------------


@needs_data
def test_device_cpu_gives_the_bits_of_no_flag_and_is_recorded_outside_the_config(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = f"train --task cb --model {tiny} --method ft --max-train 32 --max-eval 16 --epochs 1 --lr 1e-3 --quiet"
    runs = {}
    for name, extra in (("default", ""), ("cpu", " --device cpu")):
        assert main([*f"{flags}{extra} --out {tmp_path / name}".split()]) == 0
        runs[name] = tmp_path / name
    capsys.readouterr()
    for role in ("logits", "features"):
        a, b = (FINETUNE.load(runs[k], role) for k in ("default", "cpu"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), role
    heads = [FINETUNE.load(runs[k], "head") for k in ("default", "cpu")]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    config = FINETUNE.load(runs["cpu"], "config")
    assert config["precision"] == "fp32" and "device" not in config  # where is not part of what
    assert config == FINETUNE.load(runs["default"], "config")
    assert FINETUNE.load(runs["cpu"], "env")["device"] == "cpu"
    assert FINETUNE.load(runs["cpu"], "metrics")["device"] == "cpu"


def test_the_device_is_not_part_of_a_config_and_older_records_still_load() -> None:
    assert RunConfig(task="cb", method="ft", device="cuda") == RunConfig(task="cb", method="ft")
    assert "device" not in RunConfig(task="cb", method="ft", device="cuda").to_dict()
    assert RunConfig(task="cb", method="ft", precision="bf16") != RunConfig(task="cb", method="ft")
    assert "device" not in NTKConfig(task="cb", state="ft", device="cpu").to_dict()
    looped = tiny_looped()
    older = {**looped.to_dict(), "device": "cpu"}  # config.json of a looped run before the device left it
    assert TrainConfig.from_dict(older) == looped and TrainConfig.from_dict(older).device == "cpu"
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(task="cb", method="ft", precision="half")


# --- training precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_training_runs_on_the_cpu_close_to_fp32(precision: str) -> None:
    train, val = toy_data(48, 0), toy_data(16, 1)
    results = {}
    for name in ("fp32", precision):
        clf = tiny_bert_classifier()
        settings = FinetuneSettings(epochs=2, lr=3e-3, batch_size=8, eval_batch_size=16, precision=name)
        results[name] = ([row["train_loss"] for row in finetune(clf, train, val, settings, seed=5).history], clf)
    full, low = results["fp32"][0], results[precision][0]
    assert full != low  # autocast took effect
    assert np.allclose(low, full, atol=0.05), (low, full)
    assert all(torch.isfinite(p).all() for p in results[precision][1].parameters())


def test_an_fp16_run_resumes_with_its_loss_scale(tmp_path: Path) -> None:
    train, val = toy_data(48, 0), toy_data(16, 1)
    settings = FinetuneSettings(epochs=2, lr=3e-3, batch_size=8, eval_batch_size=16, precision="fp16")
    whole = tiny_bert_classifier()
    expected = finetune(whole, train, val, settings, seed=5).history

    def stop(epoch: int, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_bert_classifier(), train, val, settings, seed=5, checkpoint_dir=tmp_path, on_epoch_end=stop)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["scaler"]["scale"] > 0
    resumed = tiny_bert_classifier()
    history = finetune(resumed, train, val, settings, seed=5, checkpoint_dir=tmp_path).history
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in expected]
    pairs = zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@needs_data
def test_bf16_recipe_records_its_precision_and_stays_close_to_fp32(tiny: Path, tmp_path: Path) -> None:
    full = run(ft_config(tiny), tmp_path / "fp32")
    low = run(ft_config(tiny, precision="bf16"), tmp_path / "bf16")
    assert FINETUNE.load(tmp_path / "bf16", "config")["precision"] == "bf16"
    loss_full, loss_low = full["history"][0]["train_loss"], low["history"][0]["train_loss"]
    assert loss_low != loss_full and abs(loss_low - loss_full) < 0.05 * abs(loss_full)


def test_bf16_looped_training_runs_and_records_its_precision(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    full = train_run(tiny_looped(epochs=2), TRAIN, ID, OOD, tmp_path / "fp32")
    low = train_run(tiny_looped(epochs=2, precision="bf16"), TRAIN, ID, OOD, tmp_path / "bf16")
    record = LOOPED.load(tmp_path / "bf16", "config")["train"]
    assert record["precision"] == "bf16" and "device" not in record
    assert LOOPED.load(tmp_path / "bf16", "env")["device"] == "cpu" == low["device"]
    assert low["train_loss"] != full["train_loss"]
    assert np.allclose(low["train_loss"], full["train_loss"], atol=0.05)


# --- NTK dtype ----------------------------------------------------------------------------------------------


def _pipeline_state(model: Path, spec: Path, stats: dict) -> tuple[Classifier, dict]:
    """The ``ft`` state of an NTK run rebuilt by hand in float64 (eval mode), and its training batch."""
    backbone, tokenizer = load_backbone(str(model), attn_implementation="eager")
    clf = Classifier(backbone, stats["num_labels"], pooling=stats["pooling"], seed=0).double().eval()
    task = load_task(str(spec))
    enc = encode_split(task.train.subset(stats["train_indices"]), tokenizer, 128, stats["pair_template"])
    return clf, collate(enc, list(range(len(enc))))


def test_ntk_dtype_float64_matches_float32_and_brute_force(tiny: Path, toy_spec: Path, tmp_path: Path) -> None:
    kernels = {}
    for dtype in ("float32", "float64"):
        config = NTKConfig(task=str(toy_spec), state="ft", model=str(tiny), n_train=6, n_eval=4, probes=0,
                           solvers=("ridge",), ntk_dtype=dtype)  # fmt: skip
        run_ntk(config, tmp_path / dtype)
        kernels[dtype] = NTK.load(tmp_path / dtype, "kernels")
        assert NTK.load(tmp_path / dtype, "config")["ntk_dtype"] == dtype
    for key in ("pre", "ft", "total", "total_eval"):
        assert rel_err(kernels["float32"][key], kernels["float64"][key]) < 1e-5, key
    stats = NTK.load(tmp_path / "float64", "stats")
    clf, train = _pipeline_state(tiny, toy_spec, stats)
    assert rel_err(kernels["float64"]["total"], brute_force_ntk(clf, train, train)) < 1e-10


def test_the_ntk_cli_maps_device_and_dtype(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dynascope.commands import ntk as command

    seen: list[NTKConfig] = []
    monkeypatch.setattr(command, "run_ntk", lambda config, *a, **k: seen.append(config) or {})
    monkeypatch.setattr(command, "format_table", lambda stats: "")
    argv = ["ntk", "--task", "cb", "--state", "ft", "--ntk-dtype", "float64", "--device", "cpu", "--out", "x"]
    assert main(argv) == 0
    assert (seen[0].ntk_dtype, seen[0].device) == ("float64", "cpu")


# --- CUDA (skipped without a GPU) ---------------------------------------------------------------------------


@pytest.mark.cuda
@needs_data
@pytest.mark.parametrize("method", ["ft", "lora"])
def test_one_epoch_on_cuda_equals_the_cpu(method: str, tmp_path: Path) -> None:
    model = tiny_bert_folder(tmp_path / "bert", dropout=0.0)  # dropout masks differ between devices
    runs = {
        device: run(ft_config(model, method=method, head_dropout=0.0, device=device), tmp_path / device)
        for device in ("cpu", "cuda")
    }
    assert FINETUNE.load(tmp_path / "cuda", "env")["device"] == "cuda"
    logits = {device: FINETUNE.load(tmp_path / device, "logits") for device in runs}
    for key in logits["cpu"]:
        np.testing.assert_allclose(logits["cuda"][key], logits["cpu"][key], rtol=1e-3, atol=1e-4, err_msg=key)
    loss = {device: runs[device]["history"][0]["train_loss"] for device in runs}
    assert loss["cuda"] == pytest.approx(loss["cpu"], rel=1e-4)


@pytest.mark.cuda
def test_the_float64_ntk_on_cuda_equals_the_cpu() -> None:
    a, b = tiny_batch("bert", 5, seed=3), tiny_batch("bert", 3, seed=4)
    cpu = ntk_components(kernel_model(tiny_classifier("bert")), a, b, memory_gb=1e-4)
    model = kernel_model(tiny_classifier("bert").cuda())
    cuda = ntk_components(model, *({k: v.cuda() for k, v in x.items()} for x in (a, b)), memory_gb=1e-4)
    assert cuda.total.device.type == "cpu"
    assert rel_err(cuda.total, cpu.total) < 1e-6 and rel_err(cuda.ft, cpu.ft) < 1e-6


@pytest.mark.cuda
def test_the_ntk_pipeline_on_cuda_equals_the_cpu(tiny: Path, toy_spec: Path, tmp_path: Path) -> None:
    for device in ("cpu", "cuda"):
        config = NTKConfig(task=str(toy_spec), state="lora", model=str(tiny), n_train=6, n_eval=4, probes=4,
                           ntk_dtype="float64", device=device)  # fmt: skip
        run_ntk(config, tmp_path / device)
    cpu, cuda = (NTK.load(tmp_path / d, "kernels") for d in ("cpu", "cuda"))
    for key in cpu:
        assert rel_err(cuda[key], cpu[key]) < 1e-6, key
    traces = [NTK.load(tmp_path / d, "stats")["trace"] for d in ("cpu", "cuda")]
    assert traces[1]["exact_ft"] == pytest.approx(traces[0]["exact_ft"], rel=1e-6)
    assert traces[1]["hutchinson_ft"]["estimate"] == pytest.approx(traces[0]["hutchinson_ft"]["estimate"], rel=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_looped_training_runs_on_cuda(precision: str, tmp_path: Path) -> None:
    metrics = train_run(tiny_looped(epochs=2, device="cuda", precision=precision), TRAIN, ID, OOD, tmp_path / "run")
    assert metrics["device"] == "cuda" == LOOPED.load(tmp_path / "run", "env")["device"]
    assert all(np.isfinite(metrics["train_loss"]))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"] == precision
    assert load_file(str(tmp_path / "run" / "model.safetensors"))
