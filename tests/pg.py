"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary data folder,
127.0.0.1 only, password authentication (scram), so the tests see the URLs and errors users do.

PostgreSQL refuses to run as root: under root, initdb and the server run as the ``postgres``
user that Debian's ``postgresql`` package creates. Starting takes about a second.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD, DB = "search", "searchpw", "search"


@dataclass
class LocalPostgres:
    url: str
    root: Path
    bin_dir: Path
    run_as: str | None

    def stop(self) -> None:
        pg_ctl = str(self.bin_dir / "pg_ctl")
        _run([pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"], self.run_as)
        shutil.rmtree(self.root, ignore_errors=True)


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with initdb, else initdb on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _run(cmd: list[str], run_as: str | None) -> subprocess.CompletedProcess:
    if run_as:
        cmd = ["runuser", "-u", run_as, "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bin_dir: Path) -> LocalPostgres:
    """initdb, then the server on a free port; RuntimeError with the server's words if not."""
    run_as = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="search-test-pg-"))
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        for path in (root, pwfile):
            shutil.chown(path, user=run_as)
    port = _free_port()
    data = str(root / "data")
    try:
        # The bootstrap superuser is the test user itself; trust only on the Unix socket.
        auth = [f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256"]
        _run([str(bin_dir / "initdb"), "-D", data, "-U", USER, "-E", "UTF8", *auth], run_as)
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(root / "log")
        _run([str(bin_dir / "pg_ctl"), "-D", data, "-l", log, "-w", "-o", opts, "start"], run_as)
        _run([str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "-U", USER, DB], run_as)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        words = (getattr(e, "stderr", "") or str(e)).strip()
        tail = (root / "log").read_text()[-500:] if (root / "log").is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"cannot start PostgreSQL from {bin_dir}: {words} {tail}") from None
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}"
    return LocalPostgres(url=url, root=root, bin_dir=bin_dir, run_as=run_as)
