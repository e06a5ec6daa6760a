"""Where the agent's token comes from: ``$SEARCH_AGENT_TOKEN``, a file, or (discouraged) a flag.

A token given on the command line is visible to every user of the machine (``ps``, shell
history), so it is accepted with a warning; a token file readable by other users is too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from search.errors import AgentError

TOKEN_ENV = "SEARCH_AGENT_TOKEN"


TOKEN_FILE_MAX_BYTES = 4096  # a token is a line; anything larger is the wrong file


def _read_small_file(path: Path) -> tuple[bytes, int]:
    """The bytes of ``path`` and its mode, after checking that it is a regular file of at most
    :data:`TOKEN_FILE_MAX_BYTES`: /dev/zero is never read, and a FIFO never waited on."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise AgentError(f"--token-file {path} is not a regular file")
        # O_NONBLOCK: if the path became a FIFO since the check, opening it does not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise AgentError(f"--token-file {path} does not exist") from None
    except OSError as e:
        raise AgentError(f"--token-file {path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # the file opened, not the name checked
        if not stat.S_ISREG(st.st_mode):
            raise AgentError(f"--token-file {path} is not a regular file")
        if st.st_size > TOKEN_FILE_MAX_BYTES:
            raise AgentError(
                f"--token-file {path} holds {st.st_size} bytes; a token file holds one line "
                f"(at most {TOKEN_FILE_MAX_BYTES} bytes)"
            )
        try:
            data = f.read(TOKEN_FILE_MAX_BYTES + 1)
        except OSError as e:
            raise AgentError(f"--token-file {path} cannot be read: {e.strerror}") from None
    if len(data) > TOKEN_FILE_MAX_BYTES:  # it grew after the check
        raise AgentError(f"--token-file {path} holds more than {TOKEN_FILE_MAX_BYTES} bytes")
    return data, st.st_mode


def read_token_file(path: Path) -> tuple[str, list[str]]:
    """The token in ``path`` (surrounding whitespace dropped) and warnings about the file.

    Raises:
        AgentError: not a regular file, over 4 KiB, unreadable, not UTF-8, or several lines.
    """
    path = Path(path).expanduser()
    data, mode = _read_small_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AgentError(f"--token-file {path} cannot be read: not UTF-8 text") from None
    token = text.strip()
    if "\n" in token:
        raise AgentError(f"--token-file {path} holds several lines; put the token alone in it")
    warnings = []
    if mode & 0o077:
        warnings.append(
            f"warning: the token file {path} can be read by other users "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return token, warnings


def agent_token(
    *, token: str | None, token_file: Path | None, env: str = TOKEN_ENV
) -> tuple[str, list[str]]:
    """The agent's token and the warnings to print: ``--token-file``, else ``$env``, else
    ``--token`` (warned about: other users see it in ``ps``).

    Raises:
        AgentError: both flags given, an unreadable token file, or no token at all.
    """
    if token is not None and token_file is not None:
        raise AgentError("give the token once: --token-file or --token, not both")
    if token_file is not None:
        return read_token_file(token_file)
    if token is not None:
        return token, [
            "warning: --token is visible to other users of this machine (ps, shell history); "
            f"set {env} or use --token-file instead"
        ]
    return os.environ.get(env, ""), []


TOKEN_MIN_CHARS = 8
TOKEN_MAX_CHARS = 1024


def check_token(token: str) -> str:
    """``token``, or a one-line :class:`AgentError` when it is too short to be a secret, too
    long, or holds anything but visible ASCII (a control character or a space inside would
    break the ``Authorization`` header, or hide in a terminal).
    """
    if len(token) < TOKEN_MIN_CHARS:
        raise AgentError(
            f"the agent needs a token of at least {TOKEN_MIN_CHARS} characters: set "
            "SEARCH_AGENT_TOKEN or pass --token-file"
        )
    if len(token) > TOKEN_MAX_CHARS:
        raise AgentError(f"the token has {len(token)} characters; at most {TOKEN_MAX_CHARS}")
    bad = next((i for i, c in enumerate(token) if not "!" <= c <= "~"), None)
    if bad is not None:  # where, not what: the message must not show part of the secret
        raise AgentError(
            f"the token holds a space, a control or a non-ASCII character at position {bad + 1}: "
            "use visible ASCII characters only"
        )
    return token


def private_dir(path: Path) -> Path:
    """``path`` created (with parents) and made 0700: uploads are readable by this user only.

    Raises:
        AgentError: ``path`` exists and other users can read or enter it.
    """
    if path.exists() and not path.is_dir():
        raise AgentError(f"--work-dir {path} is not a folder")
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
            path.chmod(0o700)  # mkdir's mode is masked by the umask
        except OSError as e:
            raise AgentError(f"--work-dir {path} cannot be created: {e.strerror}") from None
    elif path.stat().st_mode & 0o077:
        mode = oct(path.stat().st_mode & 0o777)[2:]
        raise AgentError(
            f"--work-dir {path} can be read by other users (mode {mode}): chmod 700 it or "
            "name a new folder"
        )
    return path
