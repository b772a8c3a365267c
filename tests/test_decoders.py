"""Decoder-only LMs (tiny random GPT-2, Llama, Qwen2): pooling, padding, LoRA targets, NTK blocks, pair
templates and the recipes end to end (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dynascope as ds
from dynascope.data.encode import encode_split, resolve_pair_template
from dynascope.errors import ConfigError
from dynascope.models.backbone import load_backbone, resolve_pooling
from dynascope.models.classifier import Classifier, pool, require_varying_phi
from dynascope.models.lora import LoraSettings, apply_lora, count_trainable, lora_target_modules
from dynascope.ntk.blocks import resolve_partition
from dynascope.ntk.components import ntk_components
from dynascope.ntk.functional import kernel_model
from dynascope.runio import read_json
from dynascope.train.recipes import RunConfig, run
from ntk.tiny_ntk import NUM_LABELS, brute_force_ntk, rel_err
from tiny_models import DECODERS, WORDS, decoder_tokenizer, tiny_bert_folder, tiny_decoder, tiny_decoder_folder

TOL = 1e-8
BLOCKS = {
    "gpt2": ["embeddings.word", "embeddings.other", "layer.00.norm", "layer.00.attention", "layer.00.mlp",
             "layer.01.norm", "layer.01.attention", "layer.01.mlp", "norm.final"],
    "llama": ["embeddings.word", "layer.00.attention", "layer.00.mlp", "layer.00.norm", "layer.01.attention",
              "layer.01.mlp", "layer.01.norm", "norm.final"],
}  # fmt: skip
BLOCKS["qwen2"] = BLOCKS["llama"]


def _classifier(family: str, seed: int = 0) -> Classifier:
    """A float64 classifier on a tiny decoder with a non-trivial head (‖V‖ order 1, non-zero bias)."""
    backbone = tiny_decoder(family, decoder_tokenizer(family), seed=seed).double()
    clf = Classifier(backbone, NUM_LABELS, head_init_std=0.3, seed=seed).double().eval()
    with torch.no_grad():
        clf.head.bias.copy_(torch.linspace(-0.2, 0.3, NUM_LABELS, dtype=torch.float64))
    return clf


def _batch(n: int, side: str, seed: int, length: int = 7, pad: int = 0) -> dict[str, torch.Tensor]:
    """``n`` examples of 4 different lengths, padded on ``side`` (token ids from a small range: shared words)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 20, (n, length), generator=gen)
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(n):
        k = i % 4
        cut = slice(length - k, None) if side == "right" else slice(0, k)
        ids[i, cut], mask[i, cut] = pad, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module", params=DECODERS)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def clf(family: str) -> Classifier:
    return _classifier(family)


@pytest.mark.parametrize("side", ["left", "right"])
def test_p_plus_f_is_the_full_ntk_and_blocks_sum_to_it(family: str, clf: Classifier, side: str) -> None:
    assert clf.pooling == "last"
    a, b = _batch(5, side, seed=0), _batch(4, side, seed=1)
    model = kernel_model(clf)
    cross = ntk_components(model, a, b)
    assert rel_err(cross.total, brute_force_ntk(clf, a, b)) <= TOL
    assert rel_err(ntk_components(model, a).total, brute_force_ntk(clf, a, a)) <= TOL
    assert list(cross.blocks) == BLOCKS[family]
    assert sum(cross.block_sizes.values()) == sum(p.numel() for p in clf.backbone.parameters())
    head = ["head.weight", "head.bias"]
    assert rel_err(cross.pre, brute_force_ntk(clf, a, b, head)) <= TOL
    for block, names in resolve_partition(model.trainable_names, model.word_name).items():
        assert rel_err(cross.blocks[block], brute_force_ntk(clf, a, b, [f"backbone.{n}" for n in names])) <= TOL
    total = sum(cross.blocks.values())
    assert rel_err(total, cross.ft) <= 1e-14


def test_left_and_right_padding_give_the_same_phi(family: str, clf: Classifier) -> None:
    right, left = _batch(6, "right", seed=2), _batch(6, "left", seed=2)
    for i in range(6):  # the same tokens in both layouts
        tokens = right["input_ids"][i, right["attention_mask"][i].bool()]
        left["input_ids"][i, left["attention_mask"][i].bool()] = tokens
    with torch.no_grad():
        phi_right, phi_left = clf.features(**right), clf.features(**left)
        alone = clf.features(right["input_ids"][3:4, :4], right["attention_mask"][3:4, :4])  # unpadded
    assert rel_err(phi_left, phi_right) <= 1e-12
    assert rel_err(phi_right[3:4], alone) <= 1e-12
    assert float(torch.cdist(phi_right, phi_right).max()) > 1e-3  # last-token φ differ between examples


def test_last_pooling_picks_the_last_attended_token() -> None:
    hidden = torch.arange(2 * 4, dtype=torch.float64).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
    assert pool(hidden, mask, "last").flatten().tolist() == [2.0, 7.0]


def test_lora_trains_only_adapter_and_head_and_its_ntk_matches(family: str) -> None:
    clf = _classifier(family, seed=3)
    apply_lora(clf, LoraSettings(r=2, alpha=4, init_std=0.3), seed=0)
    with torch.no_grad():  # B = 0 at init makes the lora_A block vanish; a non-zero B exercises both factors
        for name, param in clf.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    clf.eval()
    trainable = [n for n, p in clf.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    adapter = sum(p.numel() for n, p in clf.named_parameters() if "lora_" in n)
    h, r, layers = 16, 2, 2
    per_layer = r * (h + 3 * h) if family == "gpt2" else r * (h + h) + r * (h + 8)  # c_attn | q_proj + v_proj
    assert adapter == layers * per_layer
    assert count_trainable(clf) == adapter + NUM_LABELS * (h + 1)
    a, b = _batch(4, "left", seed=4), _batch(3, "right", seed=5)
    comp = ntk_components(kernel_model(clf), a, b)
    assert list(comp.blocks) == ["layer.00.lora", "layer.01.lora"]
    assert rel_err(comp.total, brute_force_ntk(clf, a, b)) <= TOL


def test_lora_targets_follow_the_module_structure(family: str) -> None:
    backbone = tiny_decoder(family, decoder_tokenizer(family))
    assert lora_target_modules(backbone) == (["c_attn"] if family == "gpt2" else ["q_proj", "v_proj"])


def test_a_partition_leaving_parameters_out_names_them(clf: Classifier) -> None:
    model = kernel_model(clf)
    with pytest.raises(ConfigError, match="matching no block") as err:
        resolve_partition(model.trainable_names, model.word_name, {"attention": [r"\.(?:attn|self_attn)\."]})
    assert model.word_name in str(err.value)


def test_as_classifier_pools_the_last_token_of_a_bare_decoder(family: str) -> None:
    backbone = tiny_decoder(family, decoder_tokenizer(family))
    adapted = ds.as_classifier(backbone, torch.nn.Linear(16, 2))
    assert adapted.pooling == "last"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {f: tiny_decoder_folder(root / f, f, seed=1) for f in DECODERS}


def test_auto_pooling_by_checkpoint(folders: dict[str, Path], tmp_path: Path) -> None:
    for family, folder in folders.items():
        assert resolve_pooling("auto", str(folder)) == "last", family
    bert = tiny_bert_folder(tmp_path / "bert")
    assert resolve_pooling("auto", str(bert)) == "cls"
    (bert / "1_Pooling").mkdir()
    flags = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
    (bert / "1_Pooling" / "config.json").write_text(json.dumps(flags), encoding="utf-8")
    assert resolve_pooling("auto", str(bert)) == "mean"
    assert resolve_pooling("auto", "default") == "mean"  # the packaged MiniLM is a sentence-transformers folder
    assert resolve_pooling("cls", str(folders["gpt2"])) == "cls"  # an explicit choice is kept


def test_a_missing_pad_token_becomes_eos_without_new_embeddings(folders: dict[str, Path]) -> None:
    for family in ("gpt2", "llama"):
        backbone, tokenizer = load_backbone(str(folders[family]))
        assert tokenizer.pad_token == tokenizer.eos_token
        assert backbone.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_pair_templates(folders: dict[str, Path]) -> None:
    class Pairs:
        texts, pairs, labels = ("the good", "a bad"), ("it was", "is not"), (0, 1)

    expected = {"gpt2": "eos", "llama": "tokenizer", "qwen2": "eos"}
    for family, folder in folders.items():
        _, tokenizer = load_backbone(str(folder))
        template = resolve_pair_template("auto", tokenizer)
        assert template == expected[family]
        ids = list(encode_split(Pairs, tokenizer, 16, template).input_ids[0])
        premise = tokenizer("the good")["input_ids"]  # with the specials of a single sequence (Llama: bos)
        sep = tokenizer.eos_token_id if template == "eos" else tokenizer.bos_token_id
        assert ids[: len(premise)] == premise and ids[len(premise)] == sep, family
        assert ids.count(sep) == 1 + (template == "tokenizer"), family
    with pytest.raises(ConfigError, match="pair_template"):
        resolve_pair_template("tab", tokenizer)


def _keyword_task(folder: Path) -> Path:
    """A 2-class pair task whose label is the hypothesis's last word ("good" / "bad"): linearly probe-able."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    filler = [w for w in WORDS if w not in ("good", "bad")]
    files = {}
    for split, n in (("train", 48), ("val", 24), ("test", 24)):
        path = folder / f"{split}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(n):
                label = i % 2
                premise = " ".join(rng.choice(filler, size=rng.integers(3, 7)))
                hypothesis = " ".join([*rng.choice(filler, size=rng.integers(1, 4)), "good" if label else "bad"])
                fh.write(json.dumps({"s": premise, "p": hypothesis, "label": label}) + "\n")
        files[split] = path.name
    spec = folder / "keyword.json"
    spec.write_text(
        json.dumps({"name": "keyword", "format": "jsonl", "labels": [0, 1], "text_field": "s", "pair_field": "p",
                    **files}),
        encoding="utf-8",
    )  # fmt: skip
    return spec


@pytest.fixture(scope="module")
def keyword_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _keyword_task(tmp_path_factory.mktemp("keyword"))


@pytest.mark.parametrize("method", ["lp-ft", "lora"])
def test_recipes_learn_on_each_decoder(
    folders: dict[str, Path], keyword_task: Path, family: str, method: str, tmp_path: Path
) -> None:
    config = RunConfig(
        task=str(keyword_task), method=method, model=str(folders[family]), epochs=3, lr=3e-3, batch_size=8,
        head_dropout=0.0,
    )  # fmt: skip
    metrics = run(config, tmp_path / "run")
    recorded = read_json(tmp_path / "run" / "config.json")
    assert (recorded["pooling"], recorded["pooling_requested"]) == ("last", "auto")
    assert recorded["pair_template"] in ("eos", "tokenizer")
    assert RunConfig.from_dict(recorded) == config.resolved()
    features = np.load(tmp_path / "run" / "features.npz")
    for key in ("phi_pre", "phi_post"):
        phi = features[f"test.{key}"]
        assert require_varying_phi(phi, "last") > 1e-2
    logits = np.load(tmp_path / "run" / "logits.npz")
    pred = logits["test.logits"].argmax(1)
    assert len(set(pred.tolist())) == 2  # not the majority predictor
    assert metrics["test"]["accuracy"] > metrics["majority_baseline"]["test"] + 0.2


def test_constant_phi_is_an_error(folders: dict[str, Path], keyword_task: Path, tmp_path: Path) -> None:
    # every Llama input starts with bos, and a causal LM's first token sees only itself: "cls" pools a constant
    config = RunConfig(task=str(keyword_task), method="ft", model=str(folders["llama"]), pooling="cls", epochs=1)
    with pytest.raises(ConfigError, match=r"same φ for all .* first token sees only itself"):
        run(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="same φ"):
        require_varying_phi(np.ones((5, 3)) + 1e-9 * np.random.default_rng(0).normal(size=(5, 3)), "mean")


def test_ntk_pipeline_on_a_decoder(folders: dict[str, Path], keyword_task: Path, tmp_path: Path) -> None:
    from dynascope.pipelines.ntk import NTKConfig, run_ntk

    config = NTKConfig(
        task=str(keyword_task), state="lp-ft", model=str(folders["gpt2"]), n_train=8, n_eval=4, probes=0,
        solvers=("ridge",),
    )  # fmt: skip
    stats = run_ntk(config, tmp_path / "ntk")
    recorded = read_json(tmp_path / "ntk" / "config.json")
    assert (recorded["pooling"], recorded["pooling_requested"]) == ("last", "auto")
    assert (stats["pooling"], stats["pair_template"]) == ("last", "eos")
    assert sorted(stats["blocks"]) == sorted(BLOCKS["gpt2"])
    assert stats["pre"]["rank"] > stats["num_labels"]  # not the rank-C kernel of a constant φ


@pytest.mark.parametrize("side", ["left", "right"])
def test_exact_traces_by_ghost_norms_match_the_vjp_route(family: str, clf: Classifier, side: str) -> None:
    # GPT-2's Conv1D and Llama's RMSNorm have no ghost rule: their parameters must fall back to the VJP exactly
    from dynascope.ntk.trace import JacobianOperator

    op = JacobianOperator(kernel_model(clf), _batch(4, side, seed=5), None, "logits")
    ghost, vjp = op.exact_trace(chunk=3), op.exact_trace(method="vjp")
    assert ghost > 0 and abs(ghost - vjp) <= 1e-10 * vjp, (ghost, vjp)
