"""Rates used to estimate the cost of a plan (backfill --dry-run)."""

# HumanVLM images per second per GPU used for GPU-hour estimates. The compute
# ceiling for an 8B LLaVA at ~600 prompt + ~200 output tokens is ~74 images/s on one
# H100 (989 dense bf16 TFLOP/s); our prompts are longer (~1,100 tokens per pass, two
# passes, see docs/humanvlm.md) and real utilisation is well below the ceiling, so the
# default assumes a third of it. No GPU was available to measure it (docs/performance.md):
# pass the figure `bench/humanvlm_throughput.py` measures on your GPUs with --gpu-rate.
DEFAULT_GPU_IMAGES_PER_SECOND = 25.0
