"""`mm-unidpo merge ADAPTER_DIR --out DIR`: fold a LoRA adapter into its base, for serving.

    mm-unidpo merge runs/job/final --out runs/job/merged [--base HUB_ID_OR_PATH] [--dtype bfloat16]

The adapter directory is our `final/` or a `checkpoint-N/`: peft's `adapter_config.json` names the base
(`base_model_name_or_path`; `--base` overrides it, e.g. when the base moved). The base is loaded in 16-
or 32-bit, the adapter applied and merged (`merge_and_unload`), and the merged weights are written as
safetensors together with the processor (or tokenizer), so `transformers.from_pretrained` and vLLM can
load the directory as an ordinary checkpoint.

Never in 4-bit: adding a LoRA update to NF4 weights means re-quantising them, which loses most of the
(small) update. A QLoRA adapter is therefore merged into the base reloaded in 16-bit. It was trained
against the *dequantised* NF4 weights, so the merged model differs from the trained one by the base's
quantisation error — small, usually harmless, but measurable; evaluate the merged model, not only the
adapter.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.errors import UsageError
from mm_unidpo.models.loading import load_pretrained
from mm_unidpo.yaml_config import load_yaml

from .config import CONFIG_NAME

logger = logging.getLogger(__name__)

MERGE_DTYPES = ("bfloat16", "float16", "float32")

FOUR_BIT_NOTICE = (
    "this adapter was trained with a 4-bit (QLoRA) base. Merging into 4-bit weights is not supported "
    "(re-quantising merged weights to NF4 would lose most of the LoRA update), so the base is reloaded in "
    "{dtype} and the adapter merged into that. QLoRA adapters are trained against the dequantised NF4 "
    "weights: the merged model differs slightly from the trained one (by the base's quantisation error)."
)


def read_adapter(adapter_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(peft adapter config, our run config or None) of an adapter directory."""
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} is not a LoRA adapter directory: no adapter_config.json "
            f"(give the run's final/ folder or one of its checkpoint-N/ folders)"
        )
    with open(config_file, encoding="utf-8") as f:
        adapter_config = json.load(f)
    run_config = None
    if (adapter_dir / CONFIG_NAME).is_file():
        run_config = load_yaml((adapter_dir / CONFIG_NAME).read_text(encoding="utf-8")) or None
    return adapter_config, run_config


def merge_adapter(
    adapter_dir: str | Path,
    out: str | Path,
    *,
    base: str | None = None,
    dtype: str | None = None,
    family: str | None = None,
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its base and save the result to `out`; returns `out`.

    Unset options come from the run config saved next to the adapter (`mm_unidpo_config.yaml`), then
    from defaults (bfloat16, family detected from the base's config). `trust_remote_code` never does: an
    adapter directory may come from anywhere, and its config must not decide that code runs.
    """
    adapter_config, run_config = read_adapter(adapter_dir)
    model_section = (run_config or {}).get("model") or {}
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path: pass --base")
    if dtype is None:
        dtype = model_section.get("dtype") if model_section.get("dtype") in MERGE_DTYPES else "bfloat16"
    if dtype not in MERGE_DTYPES:
        raise ValueError(f"--dtype must be one of {MERGE_DTYPES}, got {dtype!r}")
    if model_section.get("load_in_4bit"):
        logger.warning(FOUR_BIT_NOTICE.format(dtype=dtype))
    family = family or model_section.get("family")
    if model_section.get("trust_remote_code") and not trust_remote_code:
        logger.warning(
            "%s/%s was trained with model.trust_remote_code: true; it is not taken from there. If you "
            "trust the base model's code, pass --trust-remote-code",
            adapter_dir,
            CONFIG_NAME,
        )
    hub_kwargs = {"revision": model_section["revision"]} if model_section.get("revision") else {}

    logger.info("merging %s into %s (%s)", adapter_dir, base, dtype)
    model, processor = load_pretrained(
        base,
        family=family,
        adapter=str(adapter_dir),
        load_in_4bit=False,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        device_map=device_map,
        **hub_kwargs,
    )
    merged = model.merge_and_unload()
    merged.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)  # safetensors (the only format transformers 5 writes)
    save_processor(processor, out)
    with open(out / "mm_unidpo_merge.json", "w", encoding="utf-8") as f:
        json.dump(
            {
                "base": base,
                "adapter": str(Path(adapter_dir).resolve()),
                "dtype": dtype,
                "trained_in_4bit": bool(model_section.get("load_in_4bit")),
            },
            f,
            indent=2,
        )
    logger.info("merged model written to %s", out)
    return out


def save_processor(processor: Any, out: Path) -> None:
    """Save the processor / tokenizer, plus the image processor on its own (`preprocessor_config.json`).

    The separate file is the hub's classic layout: loaders that rebuild a video processor from it
    (transformers' AutoProcessor for Qwen-VL, vLLM) fail on a directory that only has the nested
    `processor_config.json` of a processor saved without its video half.
    """
    processor.save_pretrained(out)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and not (out / "preprocessor_config.json").exists():
        image_processor.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo merge", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("adapter", help="adapter directory (a run's final/ or checkpoint-N/)")
    parser.add_argument("--out", required=True, help="where to write the merged model")
    parser.add_argument(
        "--model", "--base", dest="base", help="base model (hub id or path); default: the adapter config's"
    )
    parser.add_argument("--dtype", choices=MERGE_DTYPES, help="default: the run's model.dtype, else bfloat16")
    parser.add_argument("--family", help="model family (default: the run config's, else detected)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the base model's own code from its repository (off by default; never taken from "
        "the adapter's config)",
    )
    parser.add_argument("--device-map", help="e.g. 'auto' to merge on GPU(s); default: CPU")
    parser.add_argument("--load-in-4bit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_in_4bit:
        raise UsageError(
            "merging into a 4-bit base is not supported: re-quantising the merged weights to NF4 "
            "would lose most of the LoRA update. Merge in 16-bit (the default, --dtype bfloat16) and "
            "quantise the merged model afterwards if you need a 4-bit model for serving."
        )
    out = merge_adapter(
        args.adapter,
        args.out,
        base=args.base,
        dtype=args.dtype,
        family=args.family,
        trust_remote_code=args.trust_remote_code,
        device_map=args.device_map,
    )
    print(f"merged model: {out}")
    return 0
