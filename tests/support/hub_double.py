"""A local stand-in for the Hugging Face Hub's HTTP API, for tests: the real ``huggingface_hub``
client (and transformers through it) talks to it when ``HF_ENDPOINT`` points here.

It implements what pushing and loading a model use: repo creation, ``preupload`` (files of 10 MB and
more go through LFS, like the Hub), the LFS batch API with basic transfers (upload + verify),
NDJSON commits (regular base64 files, LFS pointers, deletions), model info, and file download by
``resolve`` with the headers the client reads (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``X-Linked-Size``, ``X-Error-Code``). Private repositories answer only requests bearing the token
that created them. Uploading through Xet (the client's default when ``hf_xet`` is installed) needs a
content-addressed storage service that this double does not provide: tests set ``HF_HUB_DISABLE_XET=1``,
which makes the client use the LFS protocol the Hub also serves.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import yaml

LFS_THRESHOLD = 10 * 1024 * 1024


@dataclass
class Repo:
    owner_token: str | None
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[str] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        # what every commit gets instead of a commit: an HTTP status (as the Hub answers when it is down), or "drop"
        # (the connection closed without an answer, as when the network goes)
        self.failing_commits: int | str | None = None


class HubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made by serve()

    # -- plumbing -------------------------------------------------------------------------
    def log_message(self, *args) -> None:
        pass

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes | dict | list = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        body = json.dumps(payload).encode() if isinstance(payload, dict | list) else payload
        self.send_response(status)
        if isinstance(payload, dict | list):
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head)

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and self._token() != repo.owner_token):
            self._error(401 if repo else 404, "RepoNotFound", f"Repository {repo_id} not found", head)
            return None
        return repo

    # -- routes ---------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        self.state.requests.append((method, path))
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self.commit),
            ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", self.lfs_verify),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self.model_info),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self.tree),
            ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
            ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                with self.state.lock:
                    handler(method=method, **{k: v for k, v in match.groupdict().items()})
                return
        self._body()
        self._error(404, "EntryNotFound", f"{method} {path} is not served by the Hub test double", method == "HEAD")

    def create_repo(self, method: str) -> None:
        request = json.loads(self._body())
        if self._token() is None:
            self._error(401, "Unauthorized", "creating a repository needs a token")
            return
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        if "/" not in repo_id:
            repo_id = f"user/{repo_id}"
        if repo_id in self.state.repos:
            self._send(409, {"error": "You already created this model repo", "url": f"{self._endpoint()}/{repo_id}"})
            return
        self.state.repos[repo_id] = Repo(
            owner_token=self._token(), private=request.get("visibility", "public") != "public" or bool(request.get("private"))
        )
        self._send(200, {"url": f"{self._endpoint()}/{repo_id}", "name": repo_id})

    def validate_yaml(self, method: str) -> None:
        """The README's metadata: YAML front matter, and a ``model-index`` the Hub can render as eval results."""
        content = json.loads(self._body())["content"]
        errors = []
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        metadata = yaml.safe_load(match.group(1)) if match else None
        if not isinstance(metadata, dict):
            errors.append("no YAML metadata block at the top of README.md")
        else:
            for entry in metadata.get("model-index", []):
                for result in entry.get("results", []):
                    if not (
                        result.get("task", {}).get("type")
                        and result.get("dataset", {}).get("name")
                        and result.get("dataset", {}).get("type")
                    ):
                        errors.append(f"model-index result without task.type / dataset.name / dataset.type: {result}")
                    for metric in result.get("metrics", []):
                        if "type" not in metric or not isinstance(metric.get("value"), int | float):
                            errors.append(f"model-index metric without type or numeric value: {metric}")
        self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

    def preupload(self, method: str, repo: str, rev: str) -> None:
        request = json.loads(self._body())
        if self._repo(repo) is None:
            return
        files = [
            {"path": f["path"], "uploadMode": "lfs" if f["size"] >= LFS_THRESHOLD else "regular", "shouldIgnore": False}
            for f in request["files"]
        ]
        self._send(200, {"files": files})

    def lfs_batch(self, method: str, repo: str) -> None:
        request = json.loads(self._body())
        if self._repo(repo) is None:
            return
        objects = []
        for obj in request["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self._endpoint()}/lfs-upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self._endpoint()}/lfs-verify/{obj['oid']}", "header": {}},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, method: str, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            self._error(400, "BadRequest", "content does not match its sha256")
            return
        self.state.lfs_objects[oid] = data
        self._send(200)

    def lfs_verify(self, method: str, oid: str) -> None:
        request = json.loads(self._body())
        ok = oid in self.state.lfs_objects and len(self.state.lfs_objects[oid]) == request["size"]
        self._send(200, {"ok": True}) if ok else self._error(404, "EntryNotFound", f"LFS object {oid} was not uploaded")

    def commit(self, method: str, repo: str, rev: str) -> None:
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        if self.state.failing_commits == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.state.failing_commits:
            self._error(self.state.failing_commits, "InternalError", "Internal Error - We're working hard to fix this as soon as possible!")
            return
        target = self._repo(repo)
        if target is None:
            return
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                target.files[value["path"]] = base64.b64decode(value["content"])
                target.lfs_paths.discard(value["path"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.state.lfs_objects:
                    self._error(422, "BadRequest", f"LFS object for {value['path']} was never uploaded")
                    return
                target.files[value["path"]] = self.state.lfs_objects[value["oid"]]
                target.lfs_paths.add(value["path"])
            elif line["key"] in ("deletedFile", "deletedFolder"):
                for path in [p for p in target.files if p == value["path"] or p.startswith(value["path"].rstrip("/") + "/")]:
                    del target.files[path]
        target.commits.append(uuid.uuid4().hex + uuid.uuid4().hex[:8])
        self._send(200, {"commitUrl": f"{self._endpoint()}/{repo}/commit/{target.sha}", "commitOid": target.sha})

    def model_info(self, method: str, repo: str, rev: str | None = None) -> None:
        target = self._repo(repo)
        if target is not None:
            siblings = [{"rfilename": p} for p in sorted(target.files)]
            self._send(200, {"id": repo, "modelId": repo, "sha": target.sha, "private": target.private, "siblings": siblings, "tags": []})

    def tree(self, method: str, repo: str, rev: str, sub: str | None = None) -> None:
        target = self._repo(repo)
        if target is not None:
            prefix = (sub or "").rstrip("/")
            entries = [
                {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for p, data in sorted(target.files.items())
                if not prefix or p.startswith(prefix + "/")
            ]
            self._send(200, entries)

    def resolve(self, method: str, repo: str, rev: str, file: str) -> None:
        head = method == "HEAD"
        target = self._repo(repo, head)
        if target is None:
            return
        if rev not in ("main", target.sha):
            self._error(404, "RevisionNotFound", f"Revision {rev} not found", head)
            return
        if file not in target.files:
            self._error(
                404,
                "EntryNotFound",
                f"{file} not found in {repo}",
                head,
            )
            return
        data = target.files[file]
        headers = {"X-Repo-Commit": target.sha, "Content-Type": "application/octet-stream"}
        if file in target.lfs_paths:
            headers |= {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))}
        headers["ETag"] = f'"{hashlib.sha1(data).hexdigest()}"'
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


def serve() -> tuple[http.server.ThreadingHTTPServer, HubState]:
    """Start the double on a free loopback port in a daemon thread; returns the server and its state."""
    state = HubState()
    handler = type("BoundHubHandler", (HubHandler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state
