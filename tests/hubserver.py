"""A tiny Hugging Face hub look-alike on 127.0.0.1 for download tests.

It answers ``HEAD``/``GET`` on ``/{repo_id}/resolve/{revision}/{filename}`` (models) and
``/datasets/{repo_id}/resolve/{revision}/{filename}`` with the headers huggingface_hub's
``get_hf_file_metadata`` reads, laid out as the real hub sends them:

* an LFS file (the default): ``302`` to ``/cdn/{sha256}`` with ``X-Repo-Commit``,
  ``X-Linked-Etag: "<sha256 of the file>"``, ``X-Linked-Size`` and an ``ETag`` that is the
  git blob id of the LFS pointer; the CDN URL serves the bytes;
* a plain git file (``plain={key, ...}``): ``200`` with ``X-Repo-Commit``, ``ETag: "<git blob
  sha1 of the file>"`` and ``Content-Length``;
* anything else: ``404`` with ``X-Error-Code: EntryNotFound``.

``corrupt={key: bytes}`` serves other bytes (same size) under the headers of the real file, as a
broken mirror or proxy would. Every request is recorded in ``hub.requests`` so tests can assert
that offline mode made none.
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


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


@dataclass
class LocalHub:
    endpoint: str
    files: dict[FileKey, bytes]
    plain: set[FileKey] = field(default_factory=set)
    corrupt: dict[FileKey, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _lookup(self) -> tuple[FileKey | None, str]:
            path = unquote(self.path.split("?", 1)[0]).lstrip("/")
            repo_type = "model"
            if path.startswith("datasets/"):
                repo_type, path = "dataset", path[len("datasets/") :]
            if "/resolve/" not in path:
                return None, ""
            repo_id, rest = path.split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            key = (repo_type, repo_id, revision, filename)
            return (key if key in hub.files else None), revision

        def _send(self, status: int, headers: dict[str, str], body: bytes, with_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def _respond(self, with_body: bool) -> None:
            hub.requests.append((self.command, self.path))
            if self.path.startswith("/cdn/"):
                self._cdn(with_body)
                return
            key, revision = self._lookup()
            if key is None:
                headers = {
                    "X-Error-Code": "EntryNotFound",
                    "X-Error-Message": "Entry not found",
                    "Content-Type": "application/json",
                }
                if revision:
                    headers["X-Repo-Commit"] = revision
                self._send(404, headers, b'{"error": "Entry not found"}', with_body)
                return
            data = hub.files[key]
            body = hub.corrupt.get(key, data)
            if key in hub.plain:
                headers = {
                    "X-Repo-Commit": revision,
                    "ETag": f'"{git_blob_sha1(data)}"',
                    "Content-Type": "application/octet-stream",
                }
                self._send(200, headers, body, with_body)
                return
            sha = hashlib.sha256(data).hexdigest()
            headers = {
                "X-Repo-Commit": revision,
                "ETag": f'"{git_blob_sha1(lfs_pointer(data))}"',
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                # another host name, as the real hub's CDN is (huggingface_hub follows same-host redirects)
                "Location": f"{hub.endpoint.replace('127.0.0.1', 'localhost')}/cdn/{sha}?key={'/'.join(key)}",
            }
            self._send(302, headers, b"", with_body)

        def _cdn(self, with_body: bool) -> None:
            query = unquote(self.path.split("?key=", 1)[1]) if "?key=" in self.path else ""
            parts = query.split("/", 2)
            key = None
            if len(parts) == 3:
                repo_type, rest = parts[0], parts[1] + "/" + parts[2]
                for candidate in hub.files:
                    if candidate[0] == repo_type and "/".join(candidate[1:]) == rest:
                        key = candidate
            if key is None:
                self._send(404, {"Content-Type": "text/plain"}, b"no such object", with_body)
                return
            body = hub.corrupt.get(key, hub.files[key])
            self._send(
                200,
                {"ETag": f'"{hashlib.sha256(hub.files[key]).hexdigest()}"', "Content-Type": "application/octet-stream"},
                body,
                with_body,
            )

        def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
            self._respond(with_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._respond(with_body=True)

    return Handler


@contextmanager
def local_hub(
    files: dict[FileKey, bytes], *, plain: set[FileKey] | None = None, corrupt: dict[FileKey, bytes] | None = None
) -> Iterator[LocalHub]:
    """Serve ``files`` on 127.0.0.1; yields the hub (``hub.endpoint`` goes into HF_ENDPOINT).

    Revisions should be 40-hex commit ids, as pinned manifest entries are. ``plain``: keys served
    as non-LFS git files; ``corrupt``: keys whose bytes are replaced (headers unchanged).
    """
    hub = LocalHub(endpoint="", files=dict(files), plain=set(plain or ()), corrupt=dict(corrupt or {}))
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
