"""Import a Kohya sd-scripts dataset folder (``img/25_ohwx woman/``) into dreamgrid's layout.

Kohya's DreamBooth datasets name each image folder ``<repeats>_<token> <class>`` and keep a
caption beside each image as ``<stem>.caption`` or ``<stem>.txt`` (sd-scripts'
``--caption_extension``; ``.caption`` wins when both exist, as here). dreamgrid wants one
folder of training photos, caption overrides named by image stem, and the repeats, token and
class word in the config; :func:`import_dataset` writes the first two and returns the rest.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dreamgrid.errors import SpecError
from dreamgrid.io import list_images

FOLDER = re.compile(r"^(?P<repeats>\d+)_(?P<token>\S+)(?: (?P<class_word>.+))?$")
CAPTION_SUFFIXES = (".caption", ".txt")


@dataclass(frozen=True)
class KohyaFolder:
    """One ``N_token class`` folder."""

    path: Path
    repeats: int
    token: str
    class_word: str | None
    images: tuple[Path, ...]


def read_folder(path: Path) -> KohyaFolder:
    match = FOLDER.match(path.name)
    if not match or int(match["repeats"]) < 1:
        raise SpecError(
            f"{path}: not a Kohya image folder; name it '<repeats>_<token> <class>', "
            f"e.g. '25_ohwx woman'."
        )
    return KohyaFolder(
        path,
        int(match["repeats"]),
        match["token"],
        match["class_word"],
        tuple(list_images(path)),
    )


def caption_for(image: Path) -> Path | None:
    for suffix in CAPTION_SUFFIXES:
        candidate = image.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def import_dataset(source: Path, train_dir: Path, captions_dir: Path) -> dict:
    """Copy a Kohya ``img`` folder's images into ``train_dir`` and captions into ``captions_dir``.

    ``source`` is either one ``N_token class`` folder or the folder holding exactly one (Kohya's
    ``train_data_dir``). Existing files are never overwritten.

    Returns:
        The config values it implies: ``repeats``, ``token``, ``class_word`` (None when the
        folder name has none), ``images`` and ``captions`` (counts).

    Raises:
        SpecError: no or several instance folders, a bad folder name, a name clash.
    """
    source = Path(source)
    if FOLDER.match(source.name):
        folders = [source]
    else:
        folders = sorted(p for p in source.iterdir() if p.is_dir() and FOLDER.match(p.name))
    if len(folders) != 1:
        found = ", ".join(p.name for p in folders) or "none"
        raise SpecError(
            f"{source}: expected one '<repeats>_<token> <class>' folder, found {found}. "
            "Import one subject at a time (class images go to subject.ground_truth or are "
            "generated)."
        )
    folder = read_folder(folders[0])
    train_dir.mkdir(parents=True, exist_ok=True)
    captions_dir.mkdir(parents=True, exist_ok=True)
    captions = 0
    for image in folder.images:
        targets = [train_dir / image.name]
        caption = caption_for(image)
        if caption is not None:
            targets.append(captions_dir / f"{image.stem}{caption.suffix}")
        clash = [str(t) for t in targets if t.exists()]
        if clash:
            raise SpecError(f"{clash[0]}: already exists; import into empty folders.")
        shutil.copy2(image, targets[0])
        if caption is not None:
            shutil.copy2(caption, targets[1])
            captions += 1
    return {
        "repeats": folder.repeats,
        "token": folder.token,
        "class_word": folder.class_word,
        "images": len(folder.images),
        "captions": captions,
    }
