"""``python -m search``: the command line. ``search/__init__.py`` has already made Ctrl-C one
line from its first statement on (see ``_interrupted_early``)."""

from search.cli.main import main
from search.core.interrupts import exit_quietly

exit_quietly(main())
