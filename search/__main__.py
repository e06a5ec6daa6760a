"""``python -m search``: the command line. ``search/__init__.py`` has already made Ctrl-C one
line from its first statement on (see ``_interrupted_early``)."""

import signal

from search.cli import main

code = main()
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: no traceback at exit
# Under `python -m`, CPython exits by SIGINT (status -2, not our code) when a KeyboardInterrupt
# once ended code run from a string (exec/eval: dataclasses, torch.fx), even though main()
# caught it; evaluating a string again clears that flag (Modules/main.c, Python/pythonrun.c).
exec("None", {})  # noqa: S102
raise SystemExit(code)
