"""Importing a Kohya sd-scripts image folder: repeats, token, class and captions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dreamgrid.cli import main
from dreamgrid.errors import SpecError
from dreamgrid.train.kohya import import_dataset


def kohya_folder(root, name="25_ohwx woman"):
    folder = root / "img" / name
    folder.mkdir(parents=True)
    for stem in ("a", "b", "c"):
        pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{stem}.jpg")
    (folder / "a.caption").write_text("ohwx woman, smiling")
    (folder / "a.txt").write_text("ignored: .caption wins")
    (folder / "b.txt").write_text("ohwx woman in a red coat")
    return root / "img"


def test_import_reads_repeats_token_class_and_captions(tmp_path):
    source = kohya_folder(tmp_path)
    found = import_dataset(source, tmp_path / "train", tmp_path / "captions")
    assert found == {
        "repeats": 25,
        "token": "ohwx",
        "class_word": "woman",
        "images": 3,
        "captions": 2,
    }
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    captions = {p.name: p.read_text() for p in (tmp_path / "captions").iterdir()}
    assert captions == {"a.caption": "ohwx woman, smiling", "b.txt": "ohwx woman in a red coat"}


def test_cli_prints_the_config_values(tmp_path, capsys):
    source = kohya_folder(tmp_path) / "25_ohwx woman"
    code = main(
        [
            "import-kohya",
            str(source),
            "--train",
            str(tmp_path / "t"),
            "--captions",
            str(tmp_path / "c"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "repeats: 25" in out and "rare: ohwx" in out and "class_word: woman" in out


@pytest.mark.parametrize("name", ["ohwx woman", "0_ohwx woman", "x_ohwx"])
def test_bad_folder_names_say_how_to_name_them(tmp_path, name):
    source = kohya_folder(tmp_path, name)
    with pytest.raises(SpecError, match="<repeats>_<token> <class>"):
        import_dataset(source / name, tmp_path / "train", tmp_path / "captions")


def test_never_overwrites(tmp_path):
    source = kohya_folder(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "b.jpg").write_bytes(b"mine")
    with pytest.raises(SpecError, match="b.jpg: already exists"):
        import_dataset(source, tmp_path / "train", tmp_path / "captions")
    assert (tmp_path / "train" / "b.jpg").read_bytes() == b"mine"
