import pytest

from dreamgrid import prompts
from dreamgrid.errors import SpecError


def test_fill_replaces_token_and_class_verbatim():
    assert prompts.fill("headshot photo of {token} {class}", "alexa davalos", "woman") == (
        "headshot photo of alexa davalos woman"
    )
    # braces in a token are text, not a format field
    assert prompts.fill("{token} {class}", "o{h}wx", "woman") == "o{h}wx woman"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "ohwx woman"),
        ("", "ohwx woman"),
        ("a woman smiling at the camera", "ohwx woman, a woman smiling at the camera"),
        ("ohwx woman wearing a hat", "ohwx woman wearing a hat"),
        ("  OHWX  Woman  in a park ", "OHWX Woman in a park"),
    ],
)
def test_compose_caption_follows_kohya(raw, expected):
    assert prompts.compose_caption(raw, "ohwx", "woman") == expected


def test_token_inside_a_longer_word_does_not_count():
    assert prompts.compose_caption("ohwxy woman", "ohwx", "woman") == "ohwx woman, ohwxy woman"


def test_check_caption_names_source_and_missing_words():
    prompts.check_caption("ohwx woman, smiling", "ohwx", "woman", "img1.png")
    with pytest.raises(SpecError, match=r"img2\.png.*'ohwx'"):
        prompts.check_caption("a woman smiling", "ohwx", "woman", "img2.png")
