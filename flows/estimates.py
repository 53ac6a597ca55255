"""How long a plan takes on the chosen labeler: the `--dry-run` estimate.

The rate is the labeler's own figure (`Labeler.throughput()`: measured by a bench,
or projected from the labeler's settings, the gate's pass rate included), and the
estimate says which. `--gpu-rate` overrides it with a figure measured on your GPUs
(`bench/humanvlm_throughput.py --model ...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from humantag.workers.labelers.base import Labeler, Throughput


@dataclass(frozen=True)
class Estimate:
    images: int
    rate: Throughput

    @property
    def hours(self) -> float:
        return self.images / self.rate.images_per_second / 3600

    def row(self) -> tuple[str, str]:
        """(label, value) for the dry-run table."""
        return (
            f"estimated {self.rate.accelerator}-hours",
            f"{self.hours:,.2f} at {self.rate.images_per_second:.3g} images/s per {self.rate.accelerator} "
            f"({self.rate.source})",
        )


def estimate(labeler: Labeler, images: int, override_rate: Optional[float] = None) -> Optional[Estimate]:
    """None when the labeler has no figure and none was given."""
    own = labeler.throughput()
    if override_rate is not None:
        accelerator = own.accelerator if own is not None else "GPU"
        return Estimate(images, Throughput(override_rate, accelerator, "--gpu-rate"))
    return Estimate(images, own) if own is not None else None


def estimate_row(labeler: Labeler, images: int, override_rate: Optional[float] = None) -> tuple[str, str]:
    found = estimate(labeler, images, override_rate)
    if found is None:
        return "estimated hours", f"unknown: {labeler.name} gives no rate; pass --gpu-rate IMAGES_PER_S"
    return found.row()
