"""Time the score stage at the study's shape: dreamgrid.scoring vs the naive DeepFace.verify loop.

Usage:
    python benchmarks/bench_score.py [--renders 200] [--pairs 60] [--workers 2] [--home DIR]

Makes ``--renders`` distinct 512 px images from real public-domain photos (crops, mirrors,
brightness; see ``study_images.py``) and 7 reference close-ups into a temp dir, then, in one run
with the same model and detector:

* dreamgrid: embed the references once, detect and embed every render once in ``--workers``
  processes, distances in numpy (``distances.score_images``);
* naive: ``DeepFace.verify(render, reference)`` for every pair, as users' hand-written loops do.
  With ``--pairs N`` only N random pairs are timed and the time is extrapolated to all
  renders × references (``--pairs 0`` = every pair);
* the max abs difference between the two distances over the verified pairs (NaN pairs must
  agree: verify raises where dreamgrid records no face);
* seconds per image of dreamgrid's detect+embed vs DeepFace's own
  ``DeepFace.represent(img, model, detector)`` on the same images, one process each.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_images

from dreamgrid.scoring import deepface_adapter, distances, embedding
from dreamgrid.scoring.settings import FaceSettings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=60, help="verify pairs timed (0 = all)")
    parser.add_argument("--per-image", type=int, default=12, help="images for the 1-image test")
    parser.add_argument("--workers", type=int, default=embedding.default_workers())
    parser.add_argument("--home", type=Path, default=None, help="DEEPFACE_HOME (default: temp)")
    parser.add_argument("--model", default="Dlib")
    parser.add_argument("--detector", default="dlib")
    parser.add_argument("--metric", default="cosine")
    args = parser.parse_args(argv)

    deepface_adapter.setup_deepface(args.home or tempfile.mkdtemp(prefix="deepface-"))
    settings = FaceSettings(args.model, args.detector, args.metric, align=True)
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    images = study_images.make_renders(work / "renders", args.renders)
    references = study_images.make_references(work / "references")
    deepface_adapter.embed_faces(references[0], settings)  # load the models before timing

    start = time.perf_counter()
    embeddings = embedding.embed_reference_photos(references, settings)
    frame = distances.score_images(
        images, embeddings, settings, progress=False, workers=args.workers
    ).set_index("image")
    ours = time.perf_counter() - start

    from deepface import DeepFace

    pairs = [(i, r) for i in images for r in references]
    timed = pairs if args.pairs == 0 else random.Random(0).sample(pairs, args.pairs)
    max_diff, nan_agree = 0.0, True
    start = time.perf_counter()
    for image, reference in timed:
        try:
            distance = DeepFace.verify(
                str(image),
                str(reference),
                model_name=args.model,
                detector_backend=args.detector,
                distance_metric=args.metric,
            )["distance"]
        except ValueError:
            distance = math.nan
        got = frame.loc[image.name, f"d:{reference.name}"]
        if math.isnan(distance) or math.isnan(got):
            nan_agree &= math.isnan(distance) and math.isnan(got)
        else:
            max_diff = max(max_diff, abs(distance - got))
    verify_per_pair = (time.perf_counter() - start) / len(timed)
    naive = verify_per_pair * len(pairs)

    sample = images[: args.per_image]
    start = time.perf_counter()
    for image in sample:
        try:
            DeepFace.represent(str(image), model_name=args.model, detector_backend=args.detector)
        except ValueError:
            pass
    deepface_per_image = (time.perf_counter() - start) / len(sample)
    start = time.perf_counter()
    for image in sample:
        deepface_adapter.detect_and_embed(image, settings)
    ours_per_image = (time.perf_counter() - start) / len(sample)

    result = {
        "machine": f"{platform.machine()} {platform.processor()}".strip()
        + f", {os.cpu_count()} cpus, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "deepface": deepface_adapter.deepface_version(),
        "model": args.model,
        "detector": args.detector,
        "metric": args.metric,
        "renders": len(images),
        "references": len(references),
        "renders_with_face": int(frame["face_found"].sum()),
        "workers": args.workers,
        "dreamgrid_total_s": round(ours, 1),
        "verify_pairs_timed": len(timed),
        "verify_s_per_pair": round(verify_per_pair, 3),
        "naive_total_s" + ("" if args.pairs == 0 else "_extrapolated"): round(naive, 1),
        "speedup": round(naive / ours, 1),
        "max_abs_distance_diff": max_diff,
        "no_face_agrees": bool(nan_agree),
        "dreamgrid_s_per_image_1proc": round(ours_per_image, 3),
        "deepface_represent_s_per_image": round(deepface_per_image, 3),
        "per_image_ratio": round(ours_per_image / deepface_per_image, 3),
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
