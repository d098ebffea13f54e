"""Fixtures shared by the face-scoring tests."""

import os

import pytest

from dreamgrid import faces


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh DEEPFACE_HOME for the module, set before deepface is first imported; the
    variables scoring sets to hide the GPUs are given back afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DEEPFACE_HOME", faces.BACKEND_VAR, *faces.CPU_ENV):
            mp.delenv(name, raising=False)
        yield faces.setup_deepface(tmp_path_factory.mktemp("deepface"))


@pytest.fixture(scope="module")
def settings(home):
    return faces.FaceSettings(model="Dlib", detector="dlib", metric="cosine", align=True)


@pytest.fixture(autouse=True)
def gpus_visible_again(monkeypatch):
    """Scoring hides the GPUs for the rest of its process (dreamgrid.faces.hide_gpus); in the
    one pytest process, give them back after each test, as separate jobs would have them."""
    for name in (faces.BACKEND_VAR, *faces.CPU_ENV):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
