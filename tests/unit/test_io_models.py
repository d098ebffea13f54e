import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from dreamgrid import io, models
from dreamgrid.errors import SpecError


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with io.atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def _write_many(target: str, content: bytes, rounds: int, barrier) -> None:
    """One writer of a shared, content-keyed entry (as two training jobs fill the latent cache)."""
    barrier.wait()
    for _ in range(rounds):
        with io.atomic_path(target) as tmp, open(tmp, "wb") as handle:
            for start in range(0, len(content), 4096):  # slow enough to overlap
                handle.write(content[start : start + 4096])
                handle.flush()


def test_concurrent_writers_of_one_entry_all_succeed(tmp_path):
    target = tmp_path / "cache" / "entry.safetensors"
    content = os.urandom(1 << 20)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [
        context.Process(target=_write_many, args=(str(target), content, 15, barrier))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    # Before writers recorded their pid, each deleted the others' temps as "stale" and
    # their rename failed with FileNotFoundError.
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert target.read_bytes() == content
    assert [p.name for p in target.parent.iterdir()] == ["entry.safetensors"]


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "out.txt"
    host = io._HOST
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        temps = {
            "dead": tmp_path / f".out.txt.tmp~{host}~{dead.stdout.strip()}~abc",
            "live": tmp_path / f".out.txt.tmp~{host}~{live.pid}~def",
            "other host, recent": tmp_path / ".out.txt.tmp~elsewhere~1~ghi",
            "other host, old": tmp_path / ".out.txt.tmp~elsewhere~2~jkl",
            "legacy, old": tmp_path / ".out.txt.mno",
        }
        for temp in temps.values():
            temp.mkdir()
        old = time.time() - io.STALE_AFTER_S - 60
        for name in ("other host, old", "legacy, old"):
            os.utime(temps[name], (old, old))
        with io.atomic_path(target) as tmp:
            tmp.write_text("x")
        left = {name for name, temp in temps.items() if temp.exists()}
        assert left == {"live", "other host, recent"}
    finally:
        live.kill()
        live.wait()


def test_file_hash_is_sha256_of_the_bytes_read_in_chunks(tmp_path):
    data = os.urandom(2 * io.HASH_CHUNK + 123)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(b"second")
    assert io.file_hash(tmp_path / "a") == hashlib.sha256(data).hexdigest()
    digest = io.update_hash(io.update_hash(hashlib.sha256(), tmp_path / "a"), tmp_path / "b")
    assert digest.hexdigest() == hashlib.sha256(data + b"second").hexdigest()


def test_list_images_errors_name_the_folder(tmp_path):
    with pytest.raises(SpecError, match="not a directory"):
        io.list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SpecError, match="no images"):
        io.list_images(tmp_path)


def test_load_rgb_converts_modes_and_applies_exif(tmp_path):
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (4, 2), (255, 0, 0, 0)).save(rgba)
    image = io.load_rgb(rgba)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)

    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.new("RGB", (40, 20), "white").save(rotated, exif=exif)
    assert io.load_rgb(rotated).size == (20, 40)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(SpecError, match="broken.jpg"):
        io.load_rgb(broken)


def test_classify_model_sources(tmp_path):
    assert models.classify("tiny") == "tiny"
    assert models.classify("stable-diffusion-v1-5/stable-diffusion-v1-5") == "hub"
    with pytest.raises(SpecError, match="allow_pickle"):
        models.classify(str(tmp_path / "model.ckpt"))
    (tmp_path / "trusted.ckpt").write_bytes(b"")
    assert models.classify(str(tmp_path / "trusted.ckpt"), allow_pickle=True) == "single_file"
    with pytest.raises(SpecError, match="not found"):
        models.classify(str(tmp_path / "model.safetensors"))
    with pytest.raises(SpecError, match="no such folder"):
        models.classify(str(tmp_path / "nowhere"))
    with pytest.raises(SpecError, match="model_index.json"):
        models.classify(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{}")
    assert models.classify(str(tmp_path)) == "dir"


def test_local_folder_is_linked_not_copied(tmp_path):
    source = tmp_path / "sd"
    source.mkdir()
    (source / "model_index.json").write_text("{}")
    out = models.prepare_model(str(source), "sd", tmp_path / "prepared")
    assert json.loads((out / models.LINK).read_text())["path"] == str(source)
    assert models.resolve(out) == source
    assert not models.is_tiny(out)


def test_tiny_model_is_built_and_marked(tmp_path):
    out = models.prepare_model("tiny", "sd", tmp_path / "base")
    assert (out / "model_index.json").is_file()
    assert models.resolve(out) == out
    assert models.is_tiny(out)
