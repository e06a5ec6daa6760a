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


def read_token_file(path: Path) -> tuple[str, list[str]]:
    """The token in ``path`` (surrounding whitespace dropped) and warnings about the file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AgentError(f"--token-file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise AgentError(f"--token-file {path} cannot be read: {why}") from None
    if not stat.S_ISREG(mode):
        raise AgentError(f"--token-file {path} is not a regular file")
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


def check_token(token: str) -> str:
    """``token``, or a one-line :class:`AgentError` when it is too short to be a secret."""
    if len(token) < TOKEN_MIN_CHARS:
        raise AgentError(
            f"the agent needs a token of at least {TOKEN_MIN_CHARS} characters: set "
            "SEARCH_AGENT_TOKEN or pass --token-file"
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
