"""A tiny Hugging Face hub look-alike on 127.0.0.1 for download tests.

It answers ``HEAD``/``GET`` on ``/{repo_id}/resolve/{revision}/{filename}`` (models) and
``/datasets/{repo_id}/resolve/{revision}/{filename}`` with the headers huggingface_hub
reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``), and 404 with
``X-Error-Code: EntryNotFound`` for anything else. Every request is recorded in
``hub.requests`` so tests can assert that offline mode made none.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote

FileKey = tuple[str, str, str, str]  # (repo_type, repo_id, revision, filename)


@dataclass
class LocalHub:
    endpoint: str
    files: dict[FileKey, bytes]
    requests: list[tuple[str, str]] = field(default_factory=list)


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _lookup(self) -> tuple[bytes | None, str]:
            path = unquote(self.path.split("?", 1)[0]).lstrip("/")
            repo_type = "model"
            if path.startswith("datasets/"):
                repo_type, path = "dataset", path[len("datasets/") :]
            if "/resolve/" not in path:
                return None, ""
            repo_id, rest = path.split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            return hub.files.get((repo_type, repo_id, revision, filename)), revision

        def _respond(self, with_body: bool) -> None:
            hub.requests.append((self.command, self.path))
            body, revision = self._lookup()
            if body is None:
                payload = b'{"error": "Entry not found"}'
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Error-Message", "Entry not found")
                if revision:
                    self.send_header("X-Repo-Commit", revision)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if with_body:
                    self.wfile.write(payload)
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", revision)
            self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
            self._respond(with_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._respond(with_body=True)

    return Handler


@contextmanager
def local_hub(files: dict[FileKey, bytes]) -> Iterator[LocalHub]:
    """Serve ``files`` on 127.0.0.1; yields the hub (``hub.endpoint`` goes into HF_ENDPOINT).

    Revisions should be 40-hex commit ids, as pinned manifest entries are.
    """
    hub = LocalHub(endpoint="", files=dict(files))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(hub))
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
