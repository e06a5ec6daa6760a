import os
import signal
import sys


def _interrupted_early(signum, frame):  # noqa: ARG001 - signal handler signature
    # Ctrl-C before main() runs: nothing has been created yet, so stop at once, in one line.
    run = sys.argv[1:2] == ["run"]
    sys.stderr.write(
        "interrupted; rerun the same command to resume the study\n" if run else "interrupted\n"
    )
    os._exit(130)


signal.signal(signal.SIGINT, _interrupted_early)
from search.cli import main  # noqa: E402 - the handler must be in place first

code = main()
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: no traceback at exit
# Under `python -m`, CPython exits by SIGINT (status -2, not our code) when a KeyboardInterrupt
# once ended code run from a string (exec/eval: dataclasses, torch.fx), even though main()
# caught it; evaluating a string again clears that flag (Modules/main.c, Python/pythonrun.c).
exec("None", {})  # noqa: S102
raise SystemExit(code)
