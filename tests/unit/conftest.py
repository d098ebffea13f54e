"""Fixtures shared by the face-scoring tests."""

import pytest

from dreamgrid import faces


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh DEEPFACE_HOME for the module, set before deepface is first imported."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DEEPFACE_HOME", raising=False)
        yield faces.setup_deepface(tmp_path_factory.mktemp("deepface"))


@pytest.fixture(scope="module")
def settings(home):
    return faces.FaceSettings(model="Dlib", detector="dlib", metric="cosine", align=True)
