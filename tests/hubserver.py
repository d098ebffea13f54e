"""A stand-in for the hub on 127.0.0.1, for tests that must download but have no network.

It serves a folder at the hub's URL layout (``/<repo>/resolve/<revision>/<path>``, with the
headers huggingface_hub reads, and ``/api/models/<repo>[/revision|tree/<revision>]`` for a
snapshot),
so the libraries reach it through their own endpoint setting, ``HF_ENDPOINT``. DeepFace's
weights sit where deepface's backup source has them: ``serengil/deepface/resolve/main/<file>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

DEEPFACE_REPO = "serengil/deepface"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    """Files under ``root/<org>/<name>/`` are repo ``org/name``; ``requests`` lists
    every (method, path) asked for."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def add(self, repo: str, name: str, data: bytes) -> Path:
        path = self.root / repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def _handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _answer(self, body: bool) -> None:
            path = unquote(self.path.split("?", 1)[0])
            server.requests.append((self.command, path))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo = "/".join(parts[2:4])  # .../revision/<rev> or none: the same answer
                base = server.root / repo
                files = sorted(
                    p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()
                )
                if "tree" in parts:  # the listing snapshot_download walks
                    answer: object = [
                        {"type": "file", "path": f, "size": (base / f).stat().st_size,
                         "oid": hashlib.sha1((base / f).read_bytes()).hexdigest()}
                        for f in files
                    ]  # fmt: skip
                else:
                    siblings = [{"rfilename": f} for f in files]
                    answer = {"id": repo, "sha": COMMIT, "siblings": siblings}
                return self._send(200, json.dumps(answer).encode(), "application/json", body)
            if len(parts) >= 5 and parts[2] == "resolve":
                repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                file = server.root / repo / name
                if file.is_file():
                    data = file.read_bytes()
                    etag = hashlib.sha256(data).hexdigest()
                    return self._send(200, data, "application/octet-stream", body, etag)
                return self._send(404, b"", "text/plain", body, error="EntryNotFound")
            return self._send(404, b"", "text/plain", body, error="RepoNotFound")

        def _send(self, status, data, kind, body, etag=None, error=None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Repo-Commit", COMMIT)
            if etag:
                self.send_header("ETag", f'"{etag}"')
            if error:
                self.send_header("X-Error-Code", error)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

    return Handler


@contextlib.contextmanager
def serve(root: Path) -> Iterator[HubServer]:
    """Run a :class:`HubServer` on 127.0.0.1 (a free port) for the block."""
    hub = HubServer(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        httpd.shutdown()
        httpd.server_close()


def stand_in_onnx() -> bytes:
    """A valid ONNX graph (onnxruntime's sample) standing in for a model's weights: loading
    it works, its outputs mean nothing."""
    import onnxruntime

    return (Path(onnxruntime.__file__).parent / "datasets" / "sigmoid.onnx").read_bytes()
