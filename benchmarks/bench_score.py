"""Time the score stage: dreamgrid.faces (embed once, distances in numpy) vs DeepFace.verify.

Usage:
    python benchmarks/bench_score.py [--images DIR] [--references DIR] [--home DIR]

Writes one JSON object to stdout: seconds per image for detect+embed, seconds per
(image, reference) pair for verify, the end-to-end time of both ways for the whole grid,
and whether every distance was identical. Defaults use resources/demo.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from dreamgrid import faces
from dreamgrid.io import list_images

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT / "resources/demo/train")
    parser.add_argument("--references", type=Path, default=ROOT / "resources/demo/references")
    parser.add_argument("--home", type=Path, default=None, help="DEEPFACE_HOME (default: temp)")
    parser.add_argument("--model", default="Dlib")
    parser.add_argument("--detector", default="dlib")
    parser.add_argument("--metric", default="cosine")
    args = parser.parse_args(argv)

    faces.setup_deepface(args.home or tempfile.mkdtemp(prefix="deepface-"))
    settings = faces.FaceSettings(args.model, args.detector, args.metric, align=True)
    images, references = list_images(args.images), list_images(args.references)

    faces.embed_faces(references[0], settings)  # load models before timing

    start = time.perf_counter()
    embeddings = faces.embed_references(references, settings)
    frame = faces.score_images(images, embeddings, settings, progress=False).set_index("image")
    ours = time.perf_counter() - start

    from deepface import DeepFace

    start = time.perf_counter()
    identical = True
    for image in images:
        for reference in references:
            try:
                distance = DeepFace.verify(
                    str(image),
                    str(reference),
                    model_name=args.model,
                    detector_backend=args.detector,
                    distance_metric=args.metric,
                )["distance"]
            except ValueError:
                distance = float("nan")
            ours_d = frame.loc[image.name, f"d:{reference.name}"]
            identical &= distance == ours_d or (math.isnan(distance) and math.isnan(ours_d))
    theirs = time.perf_counter() - start

    n_images, n_refs = len(images), len(references)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "detector": args.detector,
        "images": n_images,
        "references": n_refs,
        "dreamgrid_total_s": round(ours, 2),
        "dreamgrid_s_per_image": round(ours / (n_images + n_refs), 3),
        "verify_total_s": round(theirs, 2),
        "verify_s_per_pair": round(theirs / (n_images * n_refs), 3),
        "speedup": round(theirs / ours, 1),
        "identical_distances": bool(identical),
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
