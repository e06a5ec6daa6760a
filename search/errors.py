"""Errors a user can cause. The CLI prints them as one line and exits 2."""


class SearchError(Exception):
    """Base class of user-facing errors: the message says what is wrong and how to fix it."""


class ConfigError(SearchError):
    """A space or hardware profile file is missing or malformed."""


class ProviderError(SearchError):
    """An execution provider the profile needs is not available, or a session fell back."""


class TaskError(SearchError):
    """A task, its model, weights or data cannot be loaded."""


class AgentError(SearchError):
    """The measurement agent cannot be reached, refuses the token, or refuses an upload."""
