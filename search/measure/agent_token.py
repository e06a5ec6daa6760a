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
