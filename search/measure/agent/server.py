"""The measurement agent that runs on a remote target, and the client a study uses to reach it.

The agent needs only this package, onnxruntime and numpy (no torch, no optuna). It speaks plain
HTTP + JSON with the standard library's ``ThreadingHTTPServer``:

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
limited in size (413 from the ``Content-Length`` alone), and only ONNX models and ``.npy``
arrays loaded with ``allow_pickle=False`` are accepted, so no upload can carry code. The token
travels in clear text over plain HTTP: use it on a trusted network or through an SSH tunnel.

Example (on the Jetson, then on the workstation)::

    SEARCH_AGENT_TOKEN=s3cret python -m search agent --host 0.0.0.0 --port 8765
    SEARCH_AGENT_TOKEN=s3cret python -m search run --hw jetson --agent http://jetson:8765
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import json
import re
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import onnxruntime as ort

from search.core.errors import first_line
from search.errors import AgentError, ProviderError
from search.measure.agent.limits import ConnectionLimits, HeadDeadline
from search.measure.agent.token import check_token, private_dir
from search.measure.confirmation import REQUIRED, check_names, time_files
from search.measure.machine import runtime_info
from search.measure.measurement import measure_onnx
from search.measure.runtime import available_providers, describe_device, local_arch
from search.measure.spec import MeasureSpec

API = "/v1"
_BLOB = re.compile(rf"^{API}/blobs/([0-9a-f]{{64}})$")
_JSON_LIMIT = 1 << 20  # a measure request is a few hundred bytes of JSON


@dataclass(frozen=True)
class AgentSettings:
    """How the agent serves: address, token, upload limit, where uploads live, device label."""

    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_bytes: int = 256 * 2**20
    work_dir: Path | None = None
    label: str = ""
    # A connection that sends nothing for this long is closed; more than max_connections at
    # once are answered 503, so idle sockets cannot tie up threads or descriptors.
    idle_timeout: float = 10.0
    max_connections: int = 32

    def __post_init__(self) -> None:
        check_token(self.token)
        if not self.idle_timeout > 0 or not self.max_connections >= 1:
            raise AgentError("idle_timeout must be above 0 and max_connections at least 1")


class BadRequest(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _validate_upload(data: bytes, kind: str) -> None:
    if kind == "npy":
        try:
            np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - anything np.load rejects is a bad upload
            raise BadRequest(400, f"not a .npy array without pickles: {e}") from None
        return
    try:
        import onnx
    except ImportError:  # the agent may run without the onnx package: let ORT parse it
        try:
            ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise BadRequest(400, f"not an ONNX model: {first_line(e)}") from None
        return
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as e:  # noqa: BLE001
        raise BadRequest(400, f"not a valid ONNX model: {first_line(e)}") from None


class AgentServer(ConnectionLimits, ThreadingHTTPServer):
    """The HTTP server; measurements run one at a time so they cannot disturb each other.
    Connections are limited as :mod:`search.measure.agent.limits` says."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if settings.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="search-agent-")
            work_dir = Path(self._tmp.name)
        else:
            work_dir = settings.work_dir
        self.store = private_dir(work_dir)
        self.lock = threading.Lock()
        self.init_limits(settings.max_connections)
        self.counts = {"uploads": 0, "measurements": 0, "confirmations": 0, "refused": 0}
        self.info = {
            "providers": available_providers(),
            "onnxruntime": ort.__version__,
            "arch": local_arch(),
            "device": describe_device(settings.label),
            "runtime": runtime_info(),  # the onnxruntime build, plugins, OpenVINO, emulation
            "max_upload_bytes": settings.max_upload_bytes,
        }
        super().__init__((settings.host, settings.port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def blob(self, sha: str) -> Path | None:
        for kind in ("onnx", "npy"):
            path = self.store / f"{sha}.{kind}"
            if path.is_file():
                return path
        return None

    def _upload(self, key: str, sha: object, kind: str) -> Path:
        """The stored upload ``sha`` (a JSON value) of ``kind`` (``onnx`` or ``npy``) named by
        ``key``."""
        ok = isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha)
        path = self.blob(sha) if ok and isinstance(sha, str) else None
        if path is None or path.suffix != f".{kind}":
            raise BadRequest(409, f"{key} {sha!r} has not been uploaded")
        return path

    @staticmethod
    def _spec(request: dict[str, Any]) -> MeasureSpec:
        try:
            return MeasureSpec.from_json(request.get("profile"))
        except (TypeError, ValueError) as e:
            raise BadRequest(400, f"bad profile: {e}") from None

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
        latency = (
            None
            if feed is None
            else np.load(self._upload("latency_input", feed, "npy"), allow_pickle=False)
        )
        spec = self._spec(request)
        with self.lock:
            self.counts["confirmations"] += 1
            out = time_files(
                paths,
                reference=reference,
                spec=spec,
                latency_input=latency,
                device_label=self.settings.label,
            )
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
        with self.lock:
            self.counts["measurements"] += 1
            m = measure_onnx(
                paths["model"],
                spec=spec,
                eval_inputs=np.load(paths["eval_inputs"], allow_pickle=False),
                latency_input=np.load(paths["latency_input"], allow_pickle=False),
                device_label=self.settings.label,
                reference=paths.get("reference"),
                kernels=True,  # the model runs here: so is what it ran as audited here
            )
        first = m.latency[0]
        print(
            f"measured {paths['model'].stem[:12]} for profile '{spec.name}': p50 "
            f"{first.p50_ms:.3f} ms (cv {first.cv:.1%}) on {', '.join(m.providers)}",
            flush=True,
        )
        buf = io.BytesIO()
        np.save(buf, m.outputs, allow_pickle=False)
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        (self.store / f"{sha}.npy").write_bytes(buf.getvalue())
        return {**m.summary(), "outputs": sha}

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

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
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
        self._send(status, json.dumps(data).encode())

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").encode()
        expected = f"Bearer {self.server.settings.token}".encode()
        return hmac.compare_digest(given, expected)

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not (length.isascii() and length.isdigit()):
            raise BadRequest(411, "a Content-Length header is required")
        if int(length) > limit:
            raise BadRequest(413, f"upload of {int(length)} bytes exceeds the limit of {limit}")
        return self.rfile.read(int(length))

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
                path = self.server.blob(blob.group(1))
                if path is not None:
                    path.unlink(missing_ok=True)
                self._json(200, {"deleted": blob.group(1)})
            elif self.command == "PUT" and blob:
                self._put(blob.group(1), parse_qs(url.query).get("kind", [""])[0])
            elif self.command == "POST" and url.path in (f"{API}/measure", f"{API}/confirm"):
                what = url.path.rsplit("/", 1)[1]
                try:
                    request = json.loads(self._body(_JSON_LIMIT) or b"{}")
                except ValueError:
                    raise BadRequest(400, f"the {what} request is not JSON") from None
                if not isinstance(request, dict):
                    raise BadRequest(400, f"the {what} request must be a JSON object")
                run = self.server.measure if what == "measure" else self.server.confirm
                self._json(200, run(request))
            else:
                raise BadRequest(404, f"no endpoint {self.command} {url.path}")
        except BadRequest as e:
            self._json(e.status, {"error": str(e)})
        except ProviderError as e:
            self._json(422, {"error": str(e), "type": "ProviderError"})
        except Exception as e:  # noqa: BLE001 - report the failure to the client, keep serving
            status = _status_of(e)
            first = first_line(e)
            self._json(status, {"error": f"{type(e).__name__}: {first}"[:500]})

    def _put(self, sha: str, kind: str) -> None:
        if kind not in ("onnx", "npy"):
            raise BadRequest(400, "kind must be onnx or npy; nothing else is accepted")
        data = self._body(self.server.settings.max_upload_bytes)
        if hashlib.sha256(data).hexdigest() != sha:
            raise BadRequest(400, "the upload does not match its SHA-256 address")
        _validate_upload(data, kind)
        path = self.server.store / f"{sha}.{kind}"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.server.counts["uploads"] += 1
        self._json(201, {"stored": sha})

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch  # noqa: N815 - stdlib naming


def _status_of(e: BaseException) -> int:
    """The HTTP status of a failure while serving a request.

    Whatever the request's content makes fail (a value, a type, a model ONNX Runtime cannot run
    on the given inputs) is the client's: 400. A full disk is 507. Anything else is the agent's
    own failure: 500.
    """
    if isinstance(e, TimeoutError):  # the client stopped sending half-way
        return 408
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507
    if isinstance(e, ValueError | TypeError | KeyError | IndexError | AttributeError):
        return 400
    if type(e).__module__.startswith("onnxruntime"):  # InvalidArgument, Fail, InvalidGraph
        return 400
    return 500


def serve(settings: AgentSettings) -> AgentServer:
    """Bind the agent (port 0 picks a free port); call ``serve_forever()`` on the result."""
    return AgentServer(settings)


__all__ = ["AgentServer", "AgentSettings", "check_token", "serve"]
