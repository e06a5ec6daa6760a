"""The measurement agent that runs on a remote target, and the client a study uses to reach it.

The agent needs only this package, onnxruntime, onnx and numpy (no torch, no optuna). It
speaks plain HTTP + JSON with the standard library's ``ThreadingHTTPServer``:

====== ======================= ==========================================================
GET    /v1/info                providers, onnxruntime version, architecture, device, limits
HEAD   /v1/blobs/<sha256>      200 if the agent already holds that upload, else 404
PUT    /v1/blobs/<sha256>      an ONNX file (``?kind=onnx``) or a .npy array (``?kind=npy``)
GET    /v1/blobs/<sha256>      a stored array (the outputs of a measurement)
DELETE /v1/blobs/<sha256>      forget an upload (the client drops each model after measuring)
POST   /v1/measure             JSON naming the model, inputs, profile (and a reference model to
                               pair latency with); returns the summary
POST   /v1/confirm             JSON naming models (name -> upload), a reference model, the
                               latency input (or null) and the profile: the models timed
                               interleaved with the reference (a study's front confirmation)
====== ======================= ==========================================================

Every request must carry ``Authorization: Bearer <token>``; any other is answered 401 before
its body is read, and nothing runs. Uploads are addressed by their SHA-256 (checked on arrival),
limited in size (413 from the ``Content-Length`` alone), and only self-contained ONNX models and
``.npy`` arrays loaded with ``allow_pickle=False`` are accepted
(:mod:`~search.measure.agent.uploads`), so no upload can carry code or name a file on the
target. A client's profile may set only session options and provider options that name no path
and load no code (:func:`~search.measure.ort_options.check_client_options`). Each measurement
runs in a child bounded in memory and time (:mod:`~search.measure.agent.sandbox`), and the
uploads live in a store of bounded size (:mod:`~search.measure.agent.store`). The token
travels in clear text over plain HTTP: use it on a trusted network or through an SSH tunnel.

Example (on the Jetson, then on the workstation)::

    SEARCH_AGENT_TOKEN=s3cret python -m search agent --host 0.0.0.0 --port 8765
    SEARCH_AGENT_TOKEN=s3cret python -m search run --hw jetson --agent http://jetson:8765
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import onnxruntime as ort

from search.core.errors import first_line
from search.errors import AgentError
from search.measure.agent.limits import ConnectionLimits, HeadDeadline
from search.measure.agent.sandbox import BUSY_WAIT_S, run_bounded, status_of
from search.measure.agent.settings import AgentSettings
from search.measure.agent.store import KINDS, BlobStore, StoreFull
from search.measure.agent.token import check_token, private_dir
from search.measure.agent.uploads import UploadError, check_npy, check_onnx
from search.measure.agent.work import Work, confirm_work, measure_work
from search.measure.confirmation import REQUIRED, check_names
from search.measure.machine import runtime_info
from search.measure.ort_options import check_client_options
from search.measure.runtime import available_providers, describe_device, local_arch
from search.measure.spec import MeasureSpec

API = "/v1"
_BLOB = re.compile(rf"^{API}/blobs/([0-9a-f]{{64}})$")
_JSON_LIMIT = 1 << 20  # a measure request is a few hundred bytes of JSON


class BadRequest(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer with, ``extra``
    more JSON fields of the answer (``retry_after`` also becomes a ``Retry-After`` header)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class AgentServer(ConnectionLimits, ThreadingHTTPServer):
    """The HTTP server; measurements run one at a time, each in a bounded child, so they
    cannot disturb each other or the agent. Connections are limited as
    :mod:`search.measure.agent.limits` says."""

    def __init__(self, settings: AgentSettings) -> None:
        try:  # uploads are checked with it before anything reads them
            import onnx  # noqa: F401
        except ImportError:
            raise AgentError(
                "the agent needs the onnx package to check uploads: pip install onnx"
            ) from None
        self.settings = settings
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if settings.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="search-agent-")
            work_dir = Path(self._tmp.name)
        else:
            work_dir = settings.work_dir
        # Absolute: the measuring child works in a scratch folder of its own.
        self.store = BlobStore(private_dir(work_dir).resolve(), cap=settings.max_store_bytes)
        self.lock = threading.Lock()
        self.busy_wait_s = BUSY_WAIT_S
        self.running_since: float | None = None
        self.init_limits(settings.max_connections, upload_budget=2 * settings.max_upload_bytes)
        self.counts = {"uploads": 0, "measurements": 0, "confirmations": 0, "refused": 0}
        self.children = {"peak_mb": 0.0, "longest_s": 0.0}
        self.info = {
            "providers": available_providers(),
            "onnxruntime": ort.__version__,
            "arch": local_arch(),
            "device": describe_device(settings.label),
            "runtime": runtime_info(),  # the onnxruntime build, plugins, OpenVINO, emulation
            "max_upload_bytes": settings.max_upload_bytes,
            "limits": {
                **settings.limits.to_dict(),
                "max_upload_mb": settings.max_upload_bytes / 2**20,
                "max_store_mb": settings.max_store_bytes / 2**20,
            },
            "children": self.children,  # the largest peak and longest run of a measurement
        }
        super().__init__((settings.host, settings.port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def blob(self, sha: str) -> Path | None:
        return self.store.path(sha)

    def _upload(self, key: str, sha: object, kind: str) -> Path:
        """The stored upload ``sha`` (a JSON value) of ``kind`` (``onnx`` or ``npy``) named by
        ``key``."""
        ok = isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha)
        path = self.blob(sha) if ok and isinstance(sha, str) else None
        if path is None or path.suffix != f".{kind}":
            raise BadRequest(409, f"{key} {sha!r} has not been uploaded")
        self.store.touch(path)
        return path

    @staticmethod
    def _spec(request: dict[str, Any]) -> MeasureSpec:
        try:
            spec = MeasureSpec.from_json(request.get("profile"))
            options = {p.name: dict(p.options) for p in spec.providers}
            check_client_options(spec.session_config, options)
        except (TypeError, ValueError) as e:
            raise BadRequest(400, f"bad profile: {e}") from None
        return spec

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the agent's one measuring slot; 503 with ``Retry-After`` when another
        measurement keeps it past :data:`BUSY_WAIT_S`."""
        if not self.lock.acquire(timeout=self.busy_wait_s):
            since = self.running_since
            ran = time.monotonic() - since if since is not None else 0.0
            left = max(1, round(self.settings.max_seconds - ran))
            raise BadRequest(
                503,
                f"busy: another measurement has run {ran:.0f} s (it may take {left} s more); "
                "retry later",
                retry_after=left,
            )
        self.running_since = time.monotonic()
        try:
            yield
        finally:
            self.running_since = None
            self.lock.release()

    def _bounded(self, work: Work, spec: MeasureSpec, what: str) -> dict[str, Any]:
        """``work`` run in a bounded child, in a scratch folder; its answer or a BadRequest."""
        with self.turn(), self.store.scratch() as scratch:
            outcome = run_bounded(
                lambda: work(scratch), limits=self.settings.limits, scratch=scratch,
                providers=spec.provider_names,
            )  # fmt: skip
            self.children["peak_mb"] = max(self.children["peak_mb"], outcome.peak_mb)
            self.children["longest_s"] = max(self.children["longest_s"], outcome.seconds)
            if outcome.status != 200:
                print(f"refused {what}: HTTP {outcome.status}: {outcome.body['error']}"[:300],
                      flush=True)  # fmt: skip
                raise BadRequest(outcome.status, outcome.body.pop("error"), **outcome.body)
            outputs = scratch / "outputs.npy"
            data = outputs.read_bytes() if outputs.is_file() else None
        out = outcome.body
        if data is not None:
            sha = hashlib.sha256(data).hexdigest()
            self.store.put(sha, "npy", data)
            out["outputs"] = sha
        return out

    def confirm(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/confirm``: uploaded models (``models``: name -> sha) timed interleaved
        with the uploaded ``reference`` (:func:`~search.measure.confirmation.time_files`)."""
        missing = [k for k in REQUIRED if k not in request]
        models = request.get("models")
        if missing or not isinstance(models, dict):
            raise BadRequest(
                400, f"a confirm request needs {', '.join(REQUIRED)} (models: an object)"
            )
        try:
            check_names(list(models))
        except ValueError as e:
            raise BadRequest(400, str(e)) from None
        paths = {n: self._upload(f"model {n}", sha, "onnx") for n, sha in models.items()}
        reference = self._upload("reference", request["reference"], "onnx")
        feed = request["latency_input"]
        latency = None if feed is None else self._upload("latency_input", feed, "npy")
        spec = self._spec(request)
        self.counts["confirmations"] += 1
        work = confirm_work(
            paths, reference=reference, spec=spec, latency_input=latency,
            label=self.settings.label,
        )  # fmt: skip
        out = self._bounded(work, spec, f"a confirmation of {len(paths)} model(s)")
        print(
            f"confirmed {len(paths)} model(s) against the reference for profile '{spec.name}' "
            f"over {out['rounds']} interleaved rounds",
            flush=True,
        )
        return out

    def measure(self, request: dict[str, Any]) -> dict[str, Any]:
        optional = ("reference",) if request.get("reference") is not None else ()
        paths = {
            key: self._upload(
                key, request.get(key), "onnx" if key in ("model", "reference") else "npy"
            )
            for key in ("model", "eval_inputs", "latency_input", *optional)
        }
        spec = self._spec(request)
        self.counts["measurements"] += 1
        work = measure_work(paths, spec=spec, label=self.settings.label)
        out = self._bounded(work, spec, f"model {paths['model'].stem[:12]}")
        first = out["latency"][0]
        print(
            f"measured {paths['model'].stem[:12]} for profile '{spec.name}': p50 "
            f"{first['p50_ms']:.3f} ms (cv {first['cv']:.1%}) on {', '.join(out['providers'])}",
            flush=True,
        )
        return out

    def server_close(self) -> None:
        super().server_close()
        if self._tmp is not None:
            self._tmp.cleanup()


# typeshed declares StreamRequestHandler.timeout a ClassVar, but setup() reads it per instance
# (self.timeout), so HeadDeadline's property (the server's idle timeout) is what it gets.
class _Handler(HeadDeadline, BaseHTTPRequestHandler):  # type: ignore[misc]
    server: AgentServer
    protocol_version = "HTTP/1.1"
    # A request line that is not HTTP/1.x gets a 400 with a status line, not a bare body.
    default_request_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the agent prints one line per measurement instead

    def send_error(
        self, code: int, message: str | None = None, explain: str | None = None
    ) -> None:
        # The standard library answers a request line in an HTTP version it does not speak with
        # 505 and a method it has no handler for with 501: both are the client's doing.
        code = {505: 400, 501: 405}.get(code, code)
        super().send_error(code, message, explain)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        ctype: str = "application/json",
        retry_after: object = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="search-agent"')
        if status >= 400:
            # The body of a refused request is never read, so the connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), retry_after=data.get("retry_after"))

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").encode()
        expected = f"Bearer {self.server.settings.token}".encode()
        return hmac.compare_digest(given, expected)

    def _length(self, limit: int) -> int:
        length = self.headers.get("Content-Length")
        if length is None or not (length.isascii() and length.isdigit()):
            raise BadRequest(411, "a Content-Length header is required")
        if int(length) > limit:
            raise BadRequest(413, f"upload of {int(length)} bytes exceeds the limit of {limit}")
        return int(length)

    def _read(self, length: int) -> bytes:
        data = self.rfile.read(length)
        if len(data) != length:  # the client closed the connection half-way
            raise BadRequest(400, f"the body ended after {len(data)} of {length} bytes")
        return data

    def _dispatch(self) -> None:
        self.head_done()
        if self.late:
            self.close_connection = True
            return
        if not self._authorized():
            self.server.counts["refused"] += 1
            self._json(401, {"error": "missing or wrong token"})
            return
        try:
            url = urlsplit(self.path)
            blob = _BLOB.match(url.path)
            if self.command == "GET" and url.path == f"{API}/info":
                self._json(200, self.server.info)
            elif self.command in ("GET", "HEAD") and blob:
                path = self.server.blob(blob.group(1))
                if path is None:
                    raise BadRequest(404, "no such upload")
                data = b"" if self.command == "HEAD" else path.read_bytes()
                self._send(200, data, "application/octet-stream")
            elif self.command == "DELETE" and blob:
                self.server.store.delete(blob.group(1))
                self._json(200, {"deleted": blob.group(1)})
            elif self.command == "PUT" and blob:
                self._put(blob.group(1), parse_qs(url.query).get("kind", [""])[0])
            elif self.command == "POST" and url.path in (f"{API}/measure", f"{API}/confirm"):
                what = url.path.rsplit("/", 1)[1]
                try:
                    request = json.loads(self._read(self._length(_JSON_LIMIT)) or b"{}")
                except ValueError:
                    raise BadRequest(400, f"the {what} request is not JSON") from None
                if not isinstance(request, dict):
                    raise BadRequest(400, f"the {what} request must be a JSON object")
                run = self.server.measure if what == "measure" else self.server.confirm
                self._json(200, run(request))
            else:
                raise BadRequest(404, f"no endpoint {self.command} {url.path}")
        except BadRequest as e:
            self._json(e.status, {"error": str(e), **e.extra})
        except StoreFull as e:
            self._json(507, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - report the failure to the client, keep serving
            status = status_of(e)
            self._json(status, {"error": f"{type(e).__name__}: {first_line(e)}"[:500]})

    def _put(self, sha: str, kind: str) -> None:
        if kind not in KINDS:
            raise BadRequest(400, "kind must be onnx or npy; nothing else is accepted")
        length = self._length(self.server.settings.max_upload_bytes)
        with self.server.receive(length) as room:
            if not room:
                raise BadRequest(503, "busy receiving other uploads; retry", retry_after=1)
            data = self._read(length)
            if hashlib.sha256(data).hexdigest() != sha:
                raise BadRequest(400, "the upload does not match its SHA-256 address")
            try:
                (check_onnx if kind == "onnx" else check_npy)(data)
            except UploadError as e:
                raise BadRequest(400, str(e)) from None
            self.server.store.put(sha, kind, data)
        self.server.counts["uploads"] += 1
        self._json(201, {"stored": sha})

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch  # noqa: N815 - stdlib naming


def serve(settings: AgentSettings) -> AgentServer:
    """Bind the agent (port 0 picks a free port); call ``serve_forever()`` on the result."""
    return AgentServer(settings)


__all__ = ["AgentServer", "AgentSettings", "check_token", "serve"]
