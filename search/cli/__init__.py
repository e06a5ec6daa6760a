"""The command line: ``python -m search <command>`` and the ``search`` console script.

One small command class per command (``main``: run, report, export, profiles; ``agent``;
``bench``), each turning its arguments into config objects and making one call to the function
the Python API uses; ``base`` holds what every command shares (one-line argument errors, Ctrl-C,
exit codes) and ``workers`` starts ``run --workers N``.
"""


def main(argv: list[str] | None = None) -> int:
    """The console entry point (``search.cli:main`` in installs made before the layout moved)."""
    from search.cli.main import main as run

    return run(argv)
