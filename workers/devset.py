"""The development set: real photographs that ship inside registry packages.

Nothing is downloaded: scikit-image and matplotlib carry these photos in their
wheels (both are in the `demo` and `test` extras). Labels for the six photos
live in tests/data/devset.jsonl (format: docs/evaluation.md); the lfw_subset
crops are labeled by position (first 100 faces, last 100 non-faces).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket")
MATPLOTLIB_PHOTOS = ("grace_hopper",)
DEVSET_PHOTOS = SKIMAGE_PHOTOS + MATPLOTLIB_PHOTOS
PORTRAITS = ("astronaut", "camera", "grace_hopper")


def photo_file_name(name: str) -> str:
    return f"{name}.jpg" if name in MATPLOTLIB_PHOTOS else f"{name}.png"


def write_devset(out_dir: str | Path, names: Iterable[str] = DEVSET_PHOTOS) -> list[Path]:
    """Write the named photos into `out_dir` (created); returns their paths in order."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        target = out / photo_file_name(name)
        if name in SKIMAGE_PHOTOS:
            import skimage.data

            Image.fromarray(getattr(skimage.data, name)()).save(target)
        elif name in MATPLOTLIB_PHOTOS:
            import matplotlib

            shutil.copyfile(Path(matplotlib.get_data_path()) / "sample_data" / f"{name}.jpg", target)
        else:
            raise ValueError(f"unknown devset photo {name!r}; choose from {', '.join(DEVSET_PHOTOS)}")
        paths.append(target)
    return paths


def lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's 200 grey 25x25 crops as uint8, and is_face (1 for the first 100, 0 after)."""
    import skimage.data

    faces = skimage.data.lfw_subset()
    images = (faces * 255.0).round().clip(0, 255).astype(np.uint8) if faces.dtype != np.uint8 else faces
    is_face = np.array([1] * 100 + [0] * 100, dtype=np.uint8)
    return images, is_face


def write_lfw_devset(out_dir: str | Path) -> tuple[list[Path], Path]:
    """The 200 lfw_subset crops as PNGs plus their labels (labels.jsonl in `out_dir`).

    A crop is labeled only by whether it is a face: faces_visible 1 or 0 (no
    people_count: a non-face crop may still show part of a person; no face
    centres: the crops are too small for them).
    """
    import json

    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, is_face = lfw_subset()
    paths, lines = [], []
    for index, (pixels, face) in enumerate(zip(images, is_face)):
        name = f"lfw_{'face' if face else 'nonface'}_{index:03d}.png"
        Image.fromarray(pixels).save(out / name)
        paths.append(out / name)
        lines.append(json.dumps({"image": name, "source": "scikit-image: skimage.data.lfw_subset()", "faces_visible": int(face)}))
    labels = out / "labels.jsonl"
    labels.write_text("\n".join(lines) + "\n")
    return paths, labels


def main(argv: list[str] | None = None) -> None:
    """`python -m workers.devset OUT_DIR [--demo]`: write the photos (--demo: the three portraits)."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="python -m workers.devset", description=main.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--demo", action="store_true", help="only astronaut, camera and grace_hopper")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_devset(args.out_dir, PORTRAITS if args.demo else DEVSET_PHOTOS)
    logging.getLogger("humantag.devset").info("wrote %d photos to %s", len(paths), args.out_dir)


if __name__ == "__main__":
    main()
