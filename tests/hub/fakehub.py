"""A local stand-in for the Hugging Face hub and the Tsinghua cloud, on 127.0.0.1 only.

It answers what huggingface_hub 2.x and ``cogvx download`` ask:

* ``GET /api/models/<repo>[/revision/<rev>]?blobs=true``: commit, siblings with size,
  git blob id and, for LFS files, ``lfs.sha256``;
* ``HEAD``/``GET /<repo>/resolve/<rev>/<path>``: small files directly with ``ETag`` (the
  git blob id), ``X-Repo-Commit`` and ``Content-Length``; LFS files as a 302 to
  ``/cdn-lfs/<sha256>`` with ``X-Linked-Etag`` and ``X-Linked-Size``;
* Seafile-like share links (``/f/<token>/?dl=1``, ``/d/<token>/files/?p=...&dl=1``) that
  redirect to ``/seafhttp/files/<id>/<name>``.

Every file answers ``Range`` requests (206 / 416). Faults can be armed per file: cut the
connection after N bytes, stall after N bytes until released, or serve an HTML page.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".pt", ".safetensors", ".model", ".bin")
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>Seafile</title></head><body>"
             b"<p>Please log in to continue.</p></body></html>")


def git_blob_id(data: bytes) -> str:
    """The id git (and the hub's blobId) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    """A one-shot misbehaviour for one file: abort or stall after ``after`` bytes."""

    after: int
    mode: str  # "abort" or "stall"
    release: threading.Event = field(default_factory=threading.Event)
    used: bool = False


@dataclass
class Logged:
    """One request the server saw."""

    method: str
    path: str
    range: str | None
    authorized: bool


class FakeHub:
    """The server and its content. ``start()`` returns its base URL."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.cloud: dict[str, tuple[str, bytes, str]] = {}  # link -> (name, data, type)
        self.faults: dict[str, Fault] = {}  # file key (repo path or cloud name) -> fault
        self.log: list[Logged] = []
        self.token: str | None = None  # when set, the hub answers 401 without it
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # --- content ---
    def add_repo(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = dict(files)
        self.commits[repo] = hashlib.sha1(repo.encode()).hexdigest()

    def add_cloud(self, link: str, name: str, data: bytes,
                  content_type: str = "application/octet-stream") -> None:
        self.cloud[unquote(link)] = (name, data, content_type)

    def blob_by_sha(self, sha: str) -> tuple[str, bytes] | None:
        for files in self.repos.values():
            for path, data in files.items():
                if hashlib.sha256(data).hexdigest() == sha:
                    return path, data
        return None

    def requests_for(self, fragment: str, method: str = "GET") -> list[Logged]:
        return [r for r in self.log if fragment in r.path and r.method == method]

    # --- life ---
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        for fault in self.faults.values():
            fault.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle's algorithm
        # and delayed ACKs add ~40 ms to every request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # --- routing ---
    def _route(self, head: bool) -> None:
        hub = self.hub
        hub.log.append(Logged(self.command, unquote(self.path), self.headers.get("Range"),
                              "authorization" in {k.lower() for k in self.headers}))
        split = urlsplit(self.path)
        path = unquote(split.path)
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/"):], parse_qs(split.query))
        if "/resolve/" in path:
            return self._resolve(path, head)
        if path.startswith("/cdn-lfs/"):
            found = hub.blob_by_sha(path.rsplit("/", 1)[1])
            if found is None:
                return self._plain(404, b"no such blob")
            return self._serve(found[1], found[0], head, "application/octet-stream")
        if path.startswith("/seafhttp/files/"):
            return self._seafile(path, head)
        if unquote(self.path) in hub.cloud:
            name, data, content_type = hub.cloud[unquote(self.path)]
            if "html" in content_type:  # a share that now shows a web page
                return self._serve(data, name, head, content_type)
            return self._redirect(f"/seafhttp/files/{hashlib.md5(name.encode()).hexdigest()}/"
                                  f"{name}", {})
        return self._plain(404, b"not found")

    def _authorized(self) -> bool:
        token = self.hub.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _api(self, rest: str, query: dict) -> None:
        repo, _, rev = rest.partition("/revision/")
        files = self.hub.repos.get(repo)
        if files is None:
            return self._json(404, {"error": "Repository not found"},
                              {"X-Error-Code": "RepoNotFound"})
        if not self._authorized():
            return self._json(401, {"error": "Access to model is restricted"},
                              {"X-Error-Code": "GatedRepo"})
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = [self._sibling(p, d, blobs) for p, d in sorted(files.items())]
        body = {"id": repo, "modelId": repo, "sha": self.hub.commits[repo], "private": False,
                "siblings": siblings}
        self._json(200, body, {})

    @staticmethod
    def _sibling(path: str, data: bytes, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": path}
        entry = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                            "pointerSize": 134}
        return entry

    def _resolve(self, path: str, head: bool) -> None:
        before, _, after = path.lstrip("/").partition("/resolve/")
        repo = before
        rev, _, filename = after.partition("/")
        files = self.hub.repos.get(repo)
        if files is None:
            return self._json(404, {"error": "Repository not found"},
                              {"X-Error-Code": "RepoNotFound"})
        commit = self.hub.commits[repo]
        if rev not in ("main", commit):
            return self._json(404, {"error": "Revision not found"},
                              {"X-Error-Code": "RevisionNotFound"})
        if filename not in files:
            return self._json(404, {"error": "Entry not found"},
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        data = files[filename]
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            # an absolute URL on another origin, like the hub's CDN (the token is not sent)
            cdn = self.hub.url.replace("127.0.0.1", "localhost")
            return self._redirect(f"{cdn}/cdn-lfs/{sha}", {
                "X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_id(data)}"'})
        extra = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'}
        self._serve(data, filename, head, "text/plain; charset=utf-8", extra)

    def _seafile(self, path: str, head: bool) -> None:
        name = path.rsplit("/", 1)[1]
        for link_name, data, content_type in self.hub.cloud.values():
            if link_name == name:
                return self._serve(data, name, head, content_type)
        self._plain(404, b"gone")

    # --- answers ---
    def _redirect(self, location: str, extra: dict) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, status: int, body: dict, extra: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _plain(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _serve(self, data: bytes, key: str, head: bool, content_type: str,
               extra: dict | None = None) -> None:
        total = len(data)
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first = wanted[len("bytes="):].split("-")[0]
            start = int(first or 0)
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self._write_body(body, key)

    def _write_body(self, body: bytes, key: str) -> None:
        fault = self.hub.faults.get(key)
        if fault is None or fault.used:
            self.wfile.write(body)
            return
        fault.used = True
        self.wfile.write(body[:fault.after])
        self.wfile.flush()
        if fault.mode == "stall":
            fault.release.wait(60)
        time.sleep(0.05)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
