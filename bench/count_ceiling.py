"""How far people_count within +-1 can go with the default detectors' candidates on the development scenes.

    python bench/count_ceiling.py [--scenes 120] [--seeds 1,2,3]

Both YOLOv4-tiny passes (832 px, and the 1248 px closer look) and MTCNN run on
every scene (workers/devset.py, JPEG-decoded as in bench/detector_candidates.py),
keeping every candidate down to the evidence floor (0.05). A pasted person
counts as found when a face at the labeler's `min_score` holds the person's
face centre, or a body box at or above a floor overlaps the person's box
(IoU >= 0.3); nothing false is ever counted. The share of scenes whose count of
found people is within +-1 of the truth is then an upper bound for any
threshold or merging rule over these candidates (the labeler itself counts
bodies from `min_body_score`, only from the first pass unless nobody was
found). Also printed: the people the labeler's own thresholds miss (no face at
`min_score`, no first-pass body at `min_body_score`), by face shown/hidden and
height, and what evidence is left at them. Recorded in docs/cpu-labeler.md.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

import numpy as np
from detector_candidates import scenes as decoded_scenes  # bench/ is on sys.path when this script runs

from humantag.workers.devset import make_scene
from humantag.workers.labelers.cpu.cnn import EVIDENCE_FLOOR, CnnDetectors
from humantag.workers.labelers.cpu.detectors import Detection, iou, nms, suppress_duplicates
from humantag.workers.labelers.cpu.labeler import CpuOptions

BODY_FLOORS = (0.05, 0.1, 0.2)
SMALL_PERSON = 80  # px: pasted people below this height are "small"

log = logging.getLogger("bench.count_ceiling")


def _holds(det: Detection, x: float, y: float) -> bool:
    return det.x <= x <= det.x + det.w and det.y <= y <= det.y + det.h


def measure(scenes: int, seed: int, detectors: CnnDetectors, options: CpuOptions) -> tuple[dict[float, list[bool]], Counter, Counter]:
    """Per body floor, whether each scene's ceiling count is within +-1; people by kind; missed by evidence left."""
    images, _labels = decoded_scenes(scenes, seed)
    within: dict[float, list[bool]] = {floor: [] for floor in BODY_FLOORS}
    people: Counter = Counter()
    missed: Counter = Counter()
    for index, image in enumerate(images):
        rgb = image.pixels
        faces = suppress_duplicates(detectors.faces.detect(rgb, EVIDENCE_FLOOR), 0.3)
        first_pass = detectors.bodies.find(rgb)
        first = nms(first_pass, 0.45)
        both = nms(first_pass + detectors.bodies.find_closer(rgb), 0.45)
        persons = make_scene(index, seed).persons
        found = dict.fromkeys(BODY_FLOORS, 0)
        for person in persons:
            truth = Detection(*person.box, 1.0, "body")
            face = max((f.score for f in faces if _holds(f, *person.face_center)), default=0.0)
            body = max((b.score for b in both if iou(b, truth) >= 0.3), default=0.0)
            first_body = max((b.score for b in first if iou(b, truth) >= 0.3), default=0.0)
            for floor in BODY_FLOORS:
                found[floor] += face >= options.min_score or body >= floor
            kind = ("face shown" if person.face_shown else "face hidden", "small" if person.box[3] < SMALL_PERSON else "large")
            people[kind] += 1
            if face < options.min_score and first_body < options.min_body_score:
                missed[kind + ("missed",)] += 1
                missed[kind + ("body >= 0.1 in either pass",)] += body >= 0.1
                missed[kind + ("face >= 0.05",)] += face >= EVIDENCE_FLOOR
        for floor in BODY_FLOORS:
            within[floor].append(abs(found[floor] - len(persons)) <= 1)
    return within, people, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated scene sets")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = CpuOptions()
    detectors = CnnDetectors(body_side=options.body_side, min_face=options.min_face, precision=options.precision)
    pooled: dict[float, list[bool]] = {floor: [] for floor in BODY_FLOORS}
    people: Counter = Counter()
    missed: Counter = Counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        within, seed_people, seed_missed = measure(args.scenes, seed, detectors, options)
        people += seed_people
        missed += seed_missed
        for floor in BODY_FLOORS:
            pooled[floor] += within[floor]
        log.info("seed %d: ceiling of count +-1 %s", seed, ", ".join(f"bodies from {f:g}: {np.mean(within[f]):.3f}" for f in BODY_FLOORS))
    log.info("pooled over %d scenes: ceiling of count +-1 %s", len(pooled[BODY_FLOORS[0]]),
             ", ".join(f"bodies from {f:g}: {np.mean(pooled[f]):.3f}" for f in BODY_FLOORS))
    for kind in sorted(people):
        log.info("  %-24s %4d pasted, %4d missed by the labeler's thresholds; of those %d with a body >= 0.1 in either pass, %d with a face >= 0.05",
                 " / ".join(kind), people[kind], missed[kind + ("missed",)], missed[kind + ("body >= 0.1 in either pass",)],
                 missed[kind + ("face >= 0.05",)])


if __name__ == "__main__":
    main()
