"""The study's own GPU path, end to end, at SD 1.5 shape with random weights (no download).

Usage (on a CUDA machine; benchmarks/device_check.sh runs it):
    python benchmarks/study_path.py --out DIR

Runs the entry points the workflow's jobs run, in the study's settings (512 px, batch 1,
fp16 mixed precision, gradient checkpointing, fp16 export), each as a step:

1. ``train.train_dreambooth`` epoch 1, then epoch 2 resumed from the state epoch 1 wrote, with ``adamw``
   and with ``adamw8bit`` (bitsandbytes); a few steps each (``--images``, repeats 1);
2. ``sample.sample_checkpoint``: 8 renders of the exported fp16 epoch-2 checkpoint (Euler, 30 steps,
   CFG 8, batch 8), which land in ``DIR/renders`` so they come back with the results;
3. ``scoring.steps.embed_renders`` on those renders in a separate process, as the embed_renders
   job runs (it must report the CPU and never start CUDA); skipped, with the reason, where
   deepface is not installed (then run ``--embed-only DIR/renders`` on any machine).

Each step records seconds and ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``
(GiB, peak over the step), plus what it checks (steps, resumed or replayed, resume state
size and kind, loss scale). ``DIR/study_path.json`` is rewritten after every step, so a step
that runs out of time still leaves the earlier ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow"))
sys.path.insert(0, str(HERE))

EMBED = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from dreamgrid.scoring import deepface_adapter, steps
from dreamgrid.scoring.settings import EmbedSettings
deepface_adapter.setup_deepface(sys.argv[3])
steps.embed_renders(
    renders_table=Path(sys.argv[2]) / "shard-0.csv",
    renders_dir=Path(sys.argv[2]),
    settings=EmbedSettings(model="Dlib", detector="dlib", align=True),
    out=Path(sys.argv[2]) / "faces.json",
    cache_dir=None,
    workers=2,
)
torch = sys.modules.get("torch")
print(json.dumps({**deepface_adapter.compute_info(),
                  "cuda_started": bool(torch is not None and torch.cuda.is_initialized())}))
"""


def gpu_peaks() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    torch.cuda.synchronize()
    return {
        "max_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "max_memory_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


def reset_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def state_facts(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        keys = list(handle.keys())
    return {
        "state_gib": round(path.stat().st_size / 2**30, 2),
        "state_8bit_moments": any("__bnb_optimizer_quant_state__" in k for k in keys),
        "loss_scale": (json.loads(header.get("scaler", "null")) or {}).get("scale"),
    }


def train_steps(base: Path, images: Path, work: Path, report: dict, save, shape: dict) -> Path:
    """Epochs 1 and 2 with each optimizer; returns adamw's epoch-2 checkpoint."""
    from dreamgrid import train
    from dreamgrid.train.testing import tiny_train_spec

    checkpoint = None
    for optimizer in ("adamw", "adamw8bit"):
        out = work / optimizer
        spec = tiny_train_spec(
            base,
            images,
            out,
            arm=f"study-{optimizer}",
            repeats=1,
            batch_size=1,
            learning_rate=1e-6,
            gradient_checkpointing=True,
            optimizer=optimizer,
            **shape,
        )
        for epoch in (1, 2):
            if epoch == 2:
                spec = dataclasses.replace(
                    spec,
                    epoch=2,
                    previous_meta=spec.out_checkpoint.with_suffix(".json"),
                    out_checkpoint=out / "epoch-2.safetensors",
                )
            name = f"train_{optimizer}_epoch{epoch}"
            reset_gpu()
            started = time.perf_counter()
            try:
                result = train.train_dreambooth(spec)
            except Exception as err:  # noqa: BLE001 - recorded; the other optimizer still runs
                report[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                save()
                break
            report[name] = {
                "seconds": round(time.perf_counter() - started, 1),
                "steps": result["steps"],
                "replayed": result["replayed"],
                "checkpoint_gib": round(result["checkpoint"].stat().st_size / 2**30, 2),
                **state_facts(spec.state),
                **gpu_peaks(),
            }
            save()
        if optimizer == "adamw" and "error" not in report.get("train_adamw_epoch2", {}):
            checkpoint = out / "epoch-2.safetensors"
        spec.state.unlink(missing_ok=True)  # 10 GB: keep the disk for the next optimizer
    return checkpoint


def sample_step(base: Path, checkpoint: Path, renders: Path, report: dict, size: int) -> None:
    from dreamgrid import sample

    settings = sample.SampleSettings(
        prompt="headshot photo of {token} {class}",
        negative="smile, text, watermark, illustration, painting frame, border, line drawing, "
        "3d, anime, cartoon",
        steps=30,
        cfg=8.0,
        count=8,
        seed=0,
        width=size,
        height=size,
        batch_size=8,
        scheduler="euler",
    )
    reset_gpu()
    started = time.perf_counter()
    table = sample.sample_checkpoint(
        base, checkpoint, settings, "ohwx", "woman", renders / "shard-0", renders / "shard-0.csv"
    )
    report["sample_8_renders"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "renders": len(table),
        **gpu_peaks(),
    }


def embed_step(renders: Path, report: dict) -> None:
    """The embed_renders job's code in its own process, as Snakemake runs it."""
    try:
        import deepface  # noqa: F401
    except ImportError as err:
        report["embed_renders"] = {
            "skipped": f"deepface not installed here ({err}); run "
            f"`python benchmarks/study_path.py --embed-only {renders}` where it is"
        }
        return
    started = time.perf_counter()
    home = tempfile.mkdtemp(prefix="deepface-")
    env = {k: v for k, v in os.environ.items() if k != "DEEPFACE_HOME"}
    done = subprocess.run(
        [sys.executable, "-c", EMBED, str(HERE.parent / "workflow"), str(renders), home],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        report["embed_renders"] = {"error": done.stderr[-2000:]}
        return
    faces = json.loads((renders / "faces.json").read_text())
    report["embed_renders"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "renders": len(faces["images"]),
        **json.loads(done.stdout.splitlines()[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="study-")))
    parser.add_argument("--images", type=int, default=3, help="training photos = steps/epoch")
    parser.add_argument("--work", type=Path, default=None, help="scratch (about 30 GB)")
    parser.add_argument("--embed-only", type=Path, default=None, help="a renders folder")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, 64 px")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M")}

    def save() -> None:
        (args.out / "study_path.json").write_text(json.dumps(report, indent=2) + "\n")

    if args.embed_only:
        embed_step(args.embed_only, report)
        save()
        print(json.dumps(report, indent=2))
        return 0 if "error" not in report["embed_renders"] else 1

    import torch

    if not torch.cuda.is_available() and not args.tiny:
        print("study_path.py needs a CUDA GPU (fp16 training)", file=sys.stderr)
        return 2
    from bench_train import build_sd15, make_images

    from dreamgrid.tiny import build_tiny_sd

    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    work = args.work or Path(tempfile.mkdtemp(prefix="study-work-"))
    size = 64 if args.tiny else 512
    shape = {"resolution": size, "mixed_precision": "no" if args.tiny else "fp16"}
    started = time.perf_counter()
    base = (build_tiny_sd if args.tiny else build_sd15)(work / "sd15")
    images = make_images(work / "images", args.images, size)
    report["build_model_seconds"] = round(time.perf_counter() - started, 1)
    save()
    checkpoint = train_steps(base, images, work, report, save, shape)
    if checkpoint is not None:
        try:
            sample_step(base, checkpoint, args.out / "renders", report, size)
        except Exception as err:  # noqa: BLE001 - recorded in the report
            report["sample_8_renders"] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        save()
        if "error" not in report["sample_8_renders"]:
            embed_step(args.out / "renders", report)
            save()
    print(json.dumps(report, indent=2))
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
