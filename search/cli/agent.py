"""``python -m search agent``: serve measurements here for studies that run elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.cli.base import Command
from search.errors import SearchError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _positive(kind: type):
    """An argparse type: a number of ``kind`` above zero, or a one-line error naming it."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must lie in 0..65535 (0 picks one), got {port}")
    return port


class Agent(Command):
    """Serve measurements on this machine (the target) for studies that run elsewhere.

    Needs only this package, onnxruntime and numpy. Requests must carry the token (from
    $SEARCH_AGENT_TOKEN or --token-file); the token crosses the network in clear text, so use a
    trusted network or an SSH tunnel.
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
            type=_positive(float),
            default=256.0,
            help="largest accepted upload",
        )
        parser.add_argument(
            "--work-dir", type=Path, default=None, help="where uploads live (created 0700)"
        )
        parser.add_argument(
            "--idle-timeout",
            type=_positive(float),
            default=10.0,
            metavar="SECONDS",
            help="close a connection that sends nothing for this long (default: 10)",
        )
        parser.add_argument(
            "--max-connections",
            type=_positive(int),
            default=32,
            help="connections served at once (default: 32); one more replaces an idle one, or is "
            "answered 503",
        )
        parser.add_argument(
            "--describe",
            default="",
            metavar="TEXT",
            help="added to the device description, e.g. 'MAXN power mode, fan on'",
        )

    def run(self, args: argparse.Namespace) -> int:
        from search.measure.agent.server import AgentSettings, serve
        from search.measure.agent.token import agent_token

        token, warnings = agent_token(token=args.token, token_file=args.token_file)
        settings = AgentSettings(
            token=token,
            host=args.host,
            port=args.port,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            work_dir=args.work_dir,
            label=args.describe,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
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
