"""``python -m search agent``: serve measurements here for studies that run elsewhere."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from search.cli.base import Command
from search.errors import SearchError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bounded(name: str, kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` within the agent's bounds for ``name``
    (:data:`search.measure.agent.limits.BOUNDS`), or a one-line error naming the range."""
    from search.measure.agent.limits import check_bound

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        try:
            return check_bound(name, value)
        except SearchError as e:
            raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None

    return parse


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must lie in 0..65535 (0 picks one), got {port}")
    return port


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """What one measurement may use, and how much the upload store may hold."""
    parser.add_argument(
        "--max-store-mb",
        type=_bounded("max_store_mb", float),
        default=4096.0,
        help="most the upload store may hold (default: 4096; at least --max-upload-mb); idle "
        "uploads are evicted first, then uploads are refused with 507",
    )
    parser.add_argument(
        "--max-memory-mb",
        type=_bounded("max_memory_mb", float),
        default=None,
        help="memory one measurement may allocate (default: half this machine's memory, "
        "at most 4096; 64 to this machine's memory); past it the measurement is stopped "
        "and answered 413",
    )
    parser.add_argument(
        "--max-seconds",
        type=_bounded("max_seconds", float),
        default=600.0,
        help="time one measurement may run (default: 600; 1 to 86400); past it the "
        "measurement is stopped and answered 408",
    )


class Agent(Command):
    """Serve measurements on this machine (the target) for studies that run elsewhere.

    Needs only this package, onnxruntime, onnx and numpy. Requests must carry the token (from
    $SEARCH_AGENT_TOKEN or --token-file); the token crosses the network in clear text, so use a
    trusted network or an SSH tunnel.

    Each measurement runs in a child process bounded by --max-memory-mb and --max-seconds
    (answered 413 or 408 past them), one at a time (another waits 10 s, then gets 503 and
    retries). Uploads must be self-contained ONNX files or plain .npy arrays; a client may set
    only session and provider options that name no file. The upload store holds at most
    --max-store-mb (idle uploads evicted first, else 507).
    """

    name = "agent"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=_port, default=8765, help="port (0 picks a free one)")
        parser.add_argument(
            "--token-file",
            type=Path,
            default=None,
            help="file holding the shared secret (default: $SEARCH_AGENT_TOKEN)",
        )
        parser.add_argument(
            "--token",
            default=None,
            help="the shared secret itself; visible to other users in ps: prefer "
            "$SEARCH_AGENT_TOKEN or --token-file",
        )
        parser.add_argument(
            "--max-upload-mb",
            type=_bounded("max_upload_mb", float),
            default=256.0,
            help="largest accepted upload (default: 256; 0.001 to 16384)",
        )
        parser.add_argument(
            "--work-dir", type=Path, default=None, help="where uploads live (created 0700)"
        )
        _add_limits(parser)
        parser.add_argument(
            "--idle-timeout",
            type=_bounded("idle_timeout", float),
            default=10.0,
            metavar="SECONDS",
            help="close a connection that sends nothing for this long (default: 10; 0.1 to 3600)",
        )
        parser.add_argument(
            "--max-connections",
            type=_bounded("max_connections", int),
            default=32,
            help="connections served at once (default: 32; 1 to 1024); one more replaces an idle "
            "one, or is answered 503",
        )
        parser.add_argument(
            "--describe",
            default="",
            metavar="TEXT",
            help="added to the device description, e.g. 'MAXN power mode, fan on'",
        )

    def run(self, args: argparse.Namespace) -> int:
        from search.measure.agent.limits import default_memory_mb
        from search.measure.agent.server import AgentSettings, serve
        from search.measure.agent.token import agent_token

        token, warnings = agent_token(token=args.token, token_file=args.token_file)
        memory_mb = args.max_memory_mb if args.max_memory_mb is not None else default_memory_mb()
        settings = AgentSettings(
            token=token,
            host=args.host,
            port=args.port,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            work_dir=args.work_dir,
            label=args.describe,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
            max_memory_bytes=int(memory_mb * 2**20),
            max_seconds=args.max_seconds,
            max_store_bytes=int(args.max_store_mb * 2**20),
        )
        try:
            server = serve(settings)
        except OSError as e:
            raise SearchError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
        for line in warnings:  # once the agent runs: a refused start stays one line
            print(line, file=sys.stderr)
        info = server.info
        print(
            f"agent listening on {server.url} | onnxruntime {info['onnxruntime']} | "
            f"{', '.join(info['providers'])} | {info['device']}",
            flush=True,
        )
        print(
            f"limits: {memory_mb:.0f} MiB and {args.max_seconds:g} s a measurement, uploads up "
            f"to {args.max_upload_mb:g} MiB, store up to {args.max_store_mb:g} MiB"
            + (f" (removed {server.store.removed} leftover(s))" if server.store.removed else ""),
            flush=True,
        )
        if args.host not in LOOPBACK:
            print(
                "note: plain HTTP: the token and models cross the network unencrypted; use a "
                "trusted network or an SSH tunnel (ssh -L 8765:127.0.0.1:8765 target)",
                file=sys.stderr,
            )
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return 0
