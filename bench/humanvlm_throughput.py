"""HumanVLM throughput per replica: images/s and generated tokens/s, by batch size.

Without --model it builds the tiny random test checkpoint (tests/fixtures/tiny_llava.py)
and runs it on the CPU: that measures our per-image overhead (preprocessing, grammar
masking, padding, parsing), not a real model. With --model (hub id, local dir, s3://)
on a CUDA machine it also prints achieved model FLOP/s as a fraction of the GPU's peak
(--peak-tflops, default 989 = H100 SXM dense bf16).

Figures are ratios against batch size 1 measured in the same run.

    python bench/humanvlm_throughput.py --images 16 --batch-sizes 1,4,8
    python bench/humanvlm_throughput.py --model OpenFace-CQUPT/Human_LLaVA --images 64 --batch-sizes 1,8,16
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.images import DecodedImage  # noqa: E402
from workers.labelers import LabelerOptions, create_labeler  # noqa: E402

log = logging.getLogger("bench.humanvlm")


def images(n: int, seed: int = 0) -> list[DecodedImage]:
    rng = np.random.default_rng(seed)
    sizes = [(480, 640), (640, 480), (384, 384), (720, 1280)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        out.append(DecodedImage(uri=f"mem://{i}", width=w, height=h,
                                pixels=rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
    return out


def run(model: str, batch_size: int, n: int, extra: dict, device: str | None) -> dict:
    lab = create_labeler("humanvlm", LabelerOptions(model=model, batch_size=batch_size, device=device, extra=extra))
    lab.setup()
    lab.label(images(min(batch_size, n), seed=1))  # warm-up: kernels, allocator, grammar caches
    lab.stats.__init__()  # type: ignore[misc]
    if lab._loaded.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    outputs = lab.label(images(n))
    if lab._loaded.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    params = sum(p.numel() for p in lab._loaded.model.parameters())
    tokens = lab.stats.prompt_tokens + lab.stats.generated_tokens
    return {
        "batch_size": batch_size,
        "images_s": n / elapsed,
        "gen_tokens_s": lab.stats.generated_tokens / elapsed,
        "gen_tokens_per_image": lab.stats.generated_tokens / n,
        "prompt_tokens_per_image": lab.stats.prompt_tokens / n,
        "model_tflops": 2 * params * tokens / elapsed / 1e12,
        "errors": sum(o.error_kind is not None for o in outputs),
        "device": str(lab._loaded.device),
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id, local dir or s3:// URL (default: the tiny random test model)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--device", default=None)
    parser.add_argument("--caption-max-new-tokens", type=int, default=192)
    parser.add_argument("--max-persons", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense peak for the dtype used")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    extra = {"caption_max_new_tokens": args.caption_max_new_tokens, "max_persons": args.max_persons}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.fixtures.tiny_llava import build_tiny_llava

            model = str(build_tiny_llava(Path(tmp) / "tiny"))
        extra["cache_dir"] = str(Path(tmp) / "cache") if args.model is None else None
        extra = {k: v for k, v in extra.items() if v is not None}
        results = [run(model, int(b), args.images, extra, args.device) for b in args.batch_sizes.split(",")]

    base = results[0]
    print(f"model={args.model or 'tiny-random'} device={base['device']} params={base['params']:,} images={args.images}")
    print(f"{'batch':>5} {'img/s':>8} {'x b' + str(base['batch_size']):>6} {'gen tok/s':>10} {'x':>6} "
          f"{'gen tok/img':>11} {'prompt tok/img':>14} {'TFLOP/s':>8} {'% peak':>7} {'errors':>6}")
    for r in results:
        peak = f"{100 * r['model_tflops'] / args.peak_tflops:6.2f}%" if r["device"].startswith("cuda") else "   n/a"
        print(f"{r['batch_size']:>5} {r['images_s']:8.2f} {r['images_s'] / base['images_s']:6.2f} "
              f"{r['gen_tokens_s']:10.1f} {r['gen_tokens_s'] / base['gen_tokens_s']:6.2f} "
              f"{r['gen_tokens_per_image']:11.1f} {r['prompt_tokens_per_image']:14.1f} "
              f"{r['model_tflops']:8.4f} {peak:>7} {r['errors']:6d}")
    if base["device"].startswith("cuda"):
        # The yardstick: ~13.3 TFLOP per image (8B params, ~600 prompt + ~200 output tokens).
        ceiling = args.peak_tflops / 13.3
        best = max(r["images_s"] for r in results)
        print(f"compute ceiling ~{ceiling:.0f} images/s at {args.peak_tflops:g} TFLOP/s; best {best:.2f} images/s "
              f"= {100 * best / ceiling:.2f}% of it")


if __name__ == "__main__":
    main()
