#!/usr/bin/env python3
"""A local server of the Hugging Face hub's download protocol, for testing `selfcond pull`
(scripts/check_pull.py, python/tests/test_pull.py). Standard library only.

    python3 scripts/hf_test_server.py --root DIR [--lfs-threshold BYTES] [--private REPO=TOKEN]
                                      [--drop-after FILE=N] [--corrupt FILE]

DIR/<owner>/<name>/ holds the files of a repo's single revision ("main"; its commit sha is the
sha1 of the sorted "file sha256" lines, so it changes when a file does). Two listening sockets
on 127.0.0.1 (ports chosen by the system): the hub, and a "CDN" on another port (another origin,
so a client must not send it the token). The first line on stdout is JSON:
{"port": HUB_PORT, "cdn_port": CDN_PORT, "endpoint": "http://127.0.0.1:HUB_PORT"}.

The hub:
  GET  /api/models/<owner>/<name>/revision/<rev>   {"id", "sha", "siblings": [{"rfilename"}]}
  HEAD|GET /<owner>/<name>/resolve/<rev>/<file>    rev: "main" or the commit sha (URL-encoded)
       small files: 200, ETag = the git blob sha1, Content-Length, X-Repo-Commit;
       LFS files (over --lfs-threshold bytes, or *.safetensors / *.bin / *.pt / *.h5 / *.gguf):
       302 to http://127.0.0.1:CDN_PORT/cdn/<sha256>?repo=..&file=.. with X-Linked-Etag
       ("<sha256>"), X-Linked-Size, X-Repo-Commit;
  unknown repo or revision: 404 with X-Error-Code (RepoNotFound / RevisionNotFound); a private
  repo without `Authorization: Bearer <its token>`: 401.
The CDN: GET /cdn/<sha256>?repo=..&file=.. (no token checked). File bodies honour
`Range: bytes=N-` / `bytes=N-M` (206 + Content-Range; 416 past the end).

Faults and inspection (hub port):
  POST /_control {"drop_after": {"FILE": N}}   the next GET of FILE (any repo) sends its headers,
                                                N body bytes, then drops the connection (once);
                 {"corrupt": ["FILE", ...]}     FILE's bytes are served with one byte flipped;
                 {"private": {"OWNER/NAME": "TOKEN"}}, {"reset": true} (counts and faults),
                 {"ignore_range": true}         answer Range requests with 200 and the whole file
  GET  /_stats   {"requests": [{"server", "method", "path", "range", "auth"}...]}
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf", ".onnx")


class State:
    def __init__(self, root, lfs_threshold):
        self.root = os.path.abspath(root)
        self.lfs_threshold = lfs_threshold
        self.lock = threading.Lock()
        self.requests = []
        self.drop_after = {}  # file name -> bytes to send before dropping (once)
        self.corrupt = set()
        self.private = {}  # repo -> token
        self.ignore_range = False  # answer Range requests with the whole file (200)
        self.hashes = {}  # (path, size, mtime) -> (sha256, git sha1)
        self.cdn_port = 0

    def repo_dir(self, repo):
        parts = repo.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            return None
        d = os.path.join(self.root, *parts)
        return d if os.path.isdir(d) else None

    def files(self, repo_dir):
        out = []
        for dirpath, _, names in os.walk(repo_dir, followlinks=True):
            for n in names:
                p = os.path.join(dirpath, n)
                out.append(os.path.relpath(p, repo_dir).replace(os.sep, "/"))
        return sorted(out)

    def hash_of(self, path):
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        with self.lock:
            if key in self.hashes:
                return self.hashes[key]
        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
        sha1.update(b"blob %d\0" % st.st_size)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha256.update(chunk)
                sha1.update(chunk)
        h = (sha256.hexdigest(), sha1.hexdigest())
        with self.lock:
            self.hashes[key] = h
        return h

    def commit(self, repo_dir):
        lines = "".join(f"{f} {self.hash_of(os.path.join(repo_dir, f))[0]}\n"
                        for f in self.files(repo_dir))
        return hashlib.sha1(lines.encode()).hexdigest()

    def is_lfs(self, path):
        return path.endswith(LFS_SUFFIXES) or os.path.getsize(path) > self.lfs_threshold


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set per server class
    server_name_ = "hub"

    def log_message(self, fmt, *args):  # quiet
        pass

    def record(self):
        with self.state.lock:
            self.state.requests.append({
                "server": self.server_name_, "method": self.command, "path": self.path,
                "range": self.headers.get("Range", ""),
                "auth": self.headers.get("Authorization", "")})

    def send_plain(self, code, text, headers=None):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.record()
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        if self.server_name_ != "hub" or self.path != "/_control":
            return self.send_plain(404, "not found")
        st = self.state
        with st.lock:
            if body.get("reset"):
                st.requests.clear()
                st.drop_after.clear()
                st.corrupt.clear()
            st.drop_after.update(body.get("drop_after", {}))
            st.corrupt.update(body.get("corrupt", []))
            if "uncorrupt" in body:
                st.corrupt.difference_update(body["uncorrupt"])
            st.private.update(body.get("private", {}))
            if "ignore_range" in body:
                st.ignore_range = bool(body["ignore_range"])
        self.send_json({"ok": True})

    # ---- routing ----

    def handle_any(self):
        self.record()
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")  # raw (still %-encoded) components
        if self.server_name_ == "cdn":
            if len(parts) == 3 and parts[1] == "cdn":
                return self.cdn(parts[2], urllib.parse.parse_qs(url.query))
            return self.send_plain(404, "not found")
        if url.path == "/_stats":
            with self.state.lock:
                return self.send_json({"requests": list(self.state.requests)})
        if len(parts) == 7 and parts[1:3] == ["api", "models"] and parts[5] == "revision":
            return self.api(parts[3] + "/" + parts[4], urllib.parse.unquote(parts[6]))
        if len(parts) >= 6 and parts[3] == "resolve":
            return self.resolve(parts[1] + "/" + parts[2], urllib.parse.unquote(parts[4]),
                                urllib.parse.unquote("/".join(parts[5:])))
        return self.send_plain(404, "not found")

    def check_repo(self, repo, rev):
        """(repo_dir, commit) or None after answering with an error."""
        st = self.state
        d = st.repo_dir(repo)
        token = st.private.get(repo)
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            self.send_plain(401, "Invalid credentials", {
                "X-Error-Code": "RepoNotFound",
                "X-Error-Message": "Invalid credentials in Authorization header"})
            return None
        if d is None:
            self.send_plain(404, "Repository not found", {
                "X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return None
        commit = st.commit(d)
        if rev not in ("main", commit):
            self.send_plain(404, "Revision not found", {
                "X-Error-Code": "RevisionNotFound",
                "X-Error-Message": f"Invalid rev id: {rev}"})
            return None
        return d, commit

    def api(self, repo, rev):
        found = self.check_repo(repo, rev)
        if not found:
            return
        d, commit = found
        self.send_json({"id": repo, "modelId": repo, "sha": commit,
                        "private": repo in self.state.private,
                        "siblings": [{"rfilename": f} for f in self.state.files(d)]})

    def resolve(self, repo, rev, name):
        found = self.check_repo(repo, rev)
        if not found:
            return
        d, commit = found
        if name not in self.state.files(d):
            return self.send_plain(404, "Entry not found", {
                "X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                "X-Repo-Commit": commit})
        path = os.path.join(d, name)
        sha256, sha1 = self.state.hash_of(path)
        if self.state.is_lfs(path):
            loc = (f"http://127.0.0.1:{self.state.cdn_port}/cdn/{sha256}?" +
                   urllib.parse.urlencode({"repo": repo, "file": name}))
            return self.send_plain(302, "Found", {
                "Location": loc, "X-Repo-Commit": commit, "ETag": f'"{sha1}"',
                "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(os.path.getsize(path))})
        self.send_file(path, name, {"X-Repo-Commit": commit, "ETag": f'"{sha1}"'})

    def cdn(self, sha256, query):
        repo = query.get("repo", [""])[0]
        name = query.get("file", [""])[0]
        d = self.state.repo_dir(repo)
        if d is None or name not in self.state.files(d):
            return self.send_plain(404, "no such object")
        path = os.path.join(d, name)
        if self.state.hash_of(path)[0] != sha256:
            return self.send_plain(404, "no such object")
        self.send_file(path, name, {"ETag": f'"{sha256}"'})

    def send_file(self, path, name, headers):
        size = os.path.getsize(path)
        start, end, code = 0, size - 1, 200
        rng = "" if self.state.ignore_range else self.headers.get("Range", "")
        if rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            try:
                start = int(a)
                end = min(int(b), size - 1) if b else size - 1
            except ValueError:
                return self.send_plain(400, "bad Range")
            if start >= size or start > end:
                return self.send_plain(416, "Range Not Satisfiable",
                                       {"Content-Range": f"bytes */{size}"})
            code = 206
        n = end - start + 1
        st = self.state
        drop = None
        with st.lock:
            if self.command == "GET" and name in st.drop_after:
                drop = st.drop_after.pop(name)
            corrupt = name in st.corrupt
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(n))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        flip = size // 2  # the byte flipped when corrupt
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < n:
                chunk = f.read(min(1 << 16, n - sent))
                if not chunk:
                    break
                if corrupt and start + sent <= flip < start + sent + len(chunk):
                    i = flip - start - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if drop is not None and sent + len(chunk) >= drop:
                    self.wfile.write(chunk[:max(0, drop - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # a dropped connection midway
                    return
                self.wfile.write(chunk)
                sent += len(chunk)


def serve(root, lfs_threshold=10 * 1024, private=None, drop_after=None, corrupt=None):
    """Starts both servers in daemon threads; returns (state, hub_port, cdn_port, stop)."""
    state = State(root, lfs_threshold)
    state.private.update(private or {})
    state.drop_after.update(drop_after or {})
    state.corrupt.update(corrupt or [])
    hub_cls = type("HubHandler", (Handler,), {"state": state, "server_name_": "hub"})
    cdn_cls = type("CdnHandler", (Handler,), {"state": state, "server_name_": "cdn"})
    hub = ThreadingHTTPServer(("127.0.0.1", 0), hub_cls)
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), cdn_cls)
    hub.daemon_threads = cdn.daemon_threads = True
    state.cdn_port = cdn.server_address[1]
    for s in (hub, cdn):
        threading.Thread(target=s.serve_forever, daemon=True).start()

    def stop():
        for s in (hub, cdn):
            s.shutdown()
            s.server_close()
    return state, hub.server_address[1], cdn.server_address[1], stop


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="DIR/<owner>/<name>/ holds a repo's files")
    ap.add_argument("--lfs-threshold", type=int, default=10 * 1024,
                    help="files over this many bytes are LFS files (default 10 kB)")
    ap.add_argument("--private", action="append", default=[], metavar="REPO=TOKEN")
    ap.add_argument("--drop-after", action="append", default=[], metavar="FILE=N")
    ap.add_argument("--corrupt", action="append", default=[], metavar="FILE")
    a = ap.parse_args()
    private = dict(x.split("=", 1) for x in a.private)
    drop = {k: int(v) for k, v in (x.rsplit("=", 1) for x in a.drop_after)}
    _, port, cdn_port, _ = serve(a.root, a.lfs_threshold, private, drop, a.corrupt)
    print(json.dumps({"port": port, "cdn_port": cdn_port,
                      "endpoint": f"http://127.0.0.1:{port}"}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
