"""Prompt and caption text: templates with ``{token}``/``{class}``, Kohya caption convention."""

from __future__ import annotations

import re

from dreamgrid.errors import SpecError

#: Name of the prompt set rendered from ``sample.prompt`` (extra sets: ``sample.prompt_sets``).
MAIN_PROMPT_SET = "main"
#: Token value that asks the look-alike finder for the name (``axes.token: {x: auto}``).
AUTO_TOKEN = "auto"


def fill(template: str, token: str, class_word: str) -> str:
    """Fill ``{token}`` and ``{class}`` in a prompt template.

    Plain ``str.replace`` on purpose: tokens are user text and may contain braces.
    """
    return " ".join(template.replace("{token}", token).replace("{class}", class_word).split())


def compose_caption(raw: str | None, token: str, class_word: str) -> str:
    """Kohya's convention: the caption starts with ``token class``; no caption means just that.

    A caption that already names ``token class`` (a hand-edited one) is kept as written.
    """
    instance = f"{token} {class_word}"
    raw = " ".join((raw or "").split()).strip(" ,")
    if not raw:
        return instance
    if contains_words(raw, instance):
        return raw
    return f"{instance}, {raw}"


def contains_words(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, case-insensitively."""
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, phrase.split())) + r"(?!\w)"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def check_caption(caption: str, token: str, class_word: str, source: str) -> None:
    """Guard: every training caption names the instance token and the class word.

    Raises:
        SpecError: naming ``source`` (the image or caption file) and the fix.
    """
    missing = [w for w in (token, class_word) if not contains_words(caption, w)]
    if missing:
        raise SpecError(
            f"{source}: caption {caption!r} lacks {' and '.join(map(repr, missing))}. "
            f"Every caption must contain the instance token and class word "
            f"(e.g. start it with {token + ' ' + class_word!r})."
        )
