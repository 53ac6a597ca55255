"""Images/s per core of the `cpu` labeler on 1024x768 photos: the default CNN detectors
(YOLOv4-tiny bodies + MTCNN faces; YOLO in bfloat16 where the CPU has it) against the
same in float32, the first CNN set (SSDLite bodies), the old Haar+HOG set and decoding,
in the same run.

    python bench/cpu_labeler.py [--images 24] [--rounds 3] [--vlm-ms TINY_MS]

Photos: the development set (scikit-image, matplotlib), cropped to 4:3;
half the benchmark images are one photo at 1024x768 (faces ~200-300 px; half
of these show nobody, so the default's closer look runs on them), half a 2x2
mosaic of four (busier, smaller faces). JPEG q90, decoded as the
pipeline does (workers.images.decode_image, max side 1024).

Per core: OpenCV and torch run with one thread and the figures use the process's CPU
time, so other load on a shared machine inflates them less than wall time
(both are printed). The gate's cost per image is the detector time, set
against HumanVLM's per-image time: --vlm-ms (e.g. the tiny-model figure of
bench/humanvlm_throughput.py) and the real-model estimate from ~74 images/s
on one H100.
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from humantag.workers.devset import DEVSET_PHOTOS, PORTRAITS, write_devset
from humantag.workers.images import DecodedImage, decode_image
from humantag.workers.labelers import LabelerOptions, create_labeler

H100_IMAGES_PER_S = 74.0  # HumanVLM ceiling on one H100 (issue 4)
SIZE = (1024, 768)

log = logging.getLogger("bench.cpu_labeler")


def _crop_4x3(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if w * 3 > h * 4:
        new_w = h * 4 // 3
        return rgb[:, (w - new_w) // 2 : (w - new_w) // 2 + new_w]
    new_h = w * 3 // 4
    top = (h - new_h) // 4  # keep more of the top: portraits have the face there
    return rgb[top : top + new_h]


def make_photos(count: int) -> list[tuple[bytes, int]]:
    """(JPEG bytes, people in it) for `count` 1024x768 photos."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_devset(tmp, DEVSET_PHOTOS)
        photos = [_crop_4x3(np.asarray(Image.open(p).convert("RGB"))) for p in paths]
    people = [int(name in PORTRAITS) for name in DEVSET_PHOTOS]
    out = []
    for i in range(count):
        if i % 2 == 0:
            chosen = [(i // 2) % len(photos)]
            canvas = cv2.resize(photos[chosen[0]], SIZE, interpolation=cv2.INTER_CUBIC)
        else:
            chosen = [(i + k) % len(photos) for k in range(4)]
            tiles = [cv2.resize(photos[j], (SIZE[0] // 2, SIZE[1] // 2), interpolation=cv2.INTER_AREA) for j in chosen]
            canvas = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, "JPEG", quality=90)
        out.append((buffer.getvalue(), sum(people[j] for j in chosen)))
    return out


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Best-of-rounds (cpu seconds, wall seconds) of fn()."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--detect-side", type=int, default=None, help="haar-hog option detect_side")
    parser.add_argument("--profile-scale", type=float, default=None, help="haar-hog option profile_scale")
    parser.add_argument("--scale-factor", type=float, default=None, help="haar-hog option scale_factor")
    parser.add_argument("--vlm-ms", type=float, default=None, help="HumanVLM ms per image measured elsewhere (tiny model)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    photos = make_photos(args.images)
    data = [jpeg for jpeg, _ in photos]
    old_extra = {"detectors": "haar-hog"}
    old_extra.update({k: v for k, v in (("detect_side", args.detect_side), ("profile_scale", args.profile_scale), ("scale_factor", args.scale_factor)) if v is not None})
    labelers = {
        "cnn": create_labeler("cpu", LabelerOptions()),
        "cnn-bf16": create_labeler("cpu", LabelerOptions(extra={"precision": "bf16"})),
        "cnn-fp32": create_labeler("cpu", LabelerOptions(extra={"precision": "fp32"})),
        "cnn-1look": create_labeler("cpu", LabelerOptions(extra={"look_again": False})),
        "cnn-fast": create_labeler("cpu", LabelerOptions(extra={"body_side": 704, "min_face": 20, "look_again": False})),
        "ssdlite": create_labeler("cpu", LabelerOptions(extra={"body_net": "ssdlite", "body_side": 768, "min_body_score": 0.5})),
        "haar-hog": create_labeler("cpu", LabelerOptions(extra=old_extra)),
    }
    for labeler in labelers.values():
        labeler.setup()  # one OpenCV (and torch) thread
    max_side = labelers["cnn"].decode_max_side

    def decode_all() -> list[DecodedImage]:
        return [decode_image(b, DecodedImage(uri=f"bench/{i}.jpg"), max_side=max_side) for i, b in enumerate(data)]

    decoded = decode_all()
    assert all(img.ok and img.pixels.shape[:2] == (SIZE[1], SIZE[0]) for img in decoded)
    n = len(data)
    dec_cpu, dec_wall = timed(decode_all, args.rounds)
    dec_ms = 1000 * dec_cpu / n
    print(f"{n} JPEG photos 1024x768, best of {args.rounds}, 1 thread")
    print(f"  decode only      {dec_ms:7.1f} ms/img cpu  {n / dec_cpu:6.1f} img/s/core   (wall {1000 * dec_wall / n:.1f} ms)")
    label_ms = {}
    for name, labeler in labelers.items():
        labeler.label(decoded[:2])  # warm-up
        lab_cpu, lab_wall = timed(lambda: labeler.label(decoded), args.rounds)
        label_ms[name] = 1000 * lab_cpu / n
        outputs = labeler.label(decoded)
        found = [(o.people_count or 0, expected) for o, (_, expected) in zip(outputs, photos)]
        print(f"  {name:<10} labeler {label_ms[name]:7.1f} ms/img cpu  {n / lab_cpu:6.1f} img/s/core   (wall {1000 * lab_wall / n:.1f} ms)"
              f"  decode+label {1000 / (dec_ms + label_ms[name]):.1f} img/s/core")
        for label, group in (("one photo", found[0::2]), ("2x2 mosaics", found[1::2])):
            exact = sum(got == want for got, want in group)
            print(f"      people count exact on {label}: {exact}/{len(group)} (found {sum(g for g, _ in group)} of {sum(w for _, w in group)} people)")
    print(f"  cnn resolves precision=auto to {labelers['cnn'].run_info()['precision']}; cnn / cnn-bf16: "
          f"{label_ms['cnn'] / label_ms['cnn-bf16']:.2f}x, cnn / cnn-fp32: {label_ms['cnn'] / label_ms['cnn-fp32']:.2f}x")
    print(f"  cnn / haar-hog cost: {label_ms['cnn'] / label_ms['haar-hog']:.2f}x, cnn / ssdlite: "
          f"{label_ms['cnn'] / label_ms['ssdlite']:.2f}x, cnn-1look / cnn: {label_ms['cnn-1look'] / label_ms['cnn']:.2f}x, "
          f"cnn-fast / cnn: {label_ms['cnn-fast'] / label_ms['cnn']:.2f}x   "
          f"(goal >= 4 img/s/core: {'met' if 1000 / label_ms['cnn'] >= 4 else 'NOT met'})")

    # The gate's cost is the detector's time on every image (its threshold changes only what is reported).
    lab_ms = label_ms["cnn"]
    h100_ms = 1000.0 / H100_IMAGES_PER_S
    print("gate cost per image (cnn detector cpu time on every image; HumanVLM skipped where no person):")
    print(f"  vs HumanVLM real model, ~{H100_IMAGES_PER_S:.0f} img/s on one H100 = {h100_ms:.1f} ms/img: "
          f"{lab_ms / h100_ms:.2f}x -> {lab_ms / h100_ms:.1f} detector cores keep one H100 fed")
    # Two detector threads in one gate (cv2 and torch release the GIL); the inner labeler here is image-facts.
    gate = create_labeler("gate", LabelerOptions(extra={"gate_inner": "image-facts", "gate_workers": 2}))
    gate.setup()
    gate.label(decoded[:2])
    _, gate_wall = timed(lambda: gate.label(decoded), args.rounds)
    gated = sum(bool(o.gated) for o in gate.label(decoded))
    print(f"  gate with 2 detector threads (inner image-facts): {1000 * gate_wall / n:.1f} ms/img wall, "
          f"{n / gate_wall:.1f} img/s; {gated}/{n} images gated")
    if args.vlm_ms:
        print(f"  vs HumanVLM tiny model on this CPU, {args.vlm_ms:.1f} ms/img: {lab_ms / args.vlm_ms:.3f}x")


if __name__ == "__main__":
    main()
