"""Where a study's files live: one home for the folder layout and the file names.

```
<results>/<study>/study.db           the Optuna storage (SQLite by default)
<results>/<study>/trials.csv         pareto.csv  report.html <results>/<study>/artifacts/<trial>/
model.onnx, model.q.onnx, model.opt.onnx, model.pt2, trial.json
<results>/<study>/artifacts/baseline/ <results>/<study>/students/<digest>/ a distilled student
<results>/<study>/store/             the artifact store (Optuna's FileSystemArtifactStore)
<results>/teachers/                  teachers trained once and cached
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL_ONNX = "model.onnx"  # the float export
MODEL_QDQ = "model.q.onnx"  # the quantized (or float16) copy, when any group is
MODEL_OPT = "model.opt.onnx"  # ONNX Runtime's optimized graph of the measured file
PROGRAM = "model.pt2"  # the float compressed model as a torch.export program
TRIAL_JSON = "trial.json"


@dataclass(frozen=True)
class StudyPaths:
    """The files of study ``name`` under ``results_dir``.

    Example:
        >>> StudyPaths(Path("results"), "digits-cpu").trial_dir(3).as_posix()
        'results/digits-cpu/artifacts/3'
    """

    results_dir: Path
    name: str

    @classmethod
    def of(cls, study_dir: Path | str) -> StudyPaths:
        """The paths of the study whose folder is ``study_dir``."""
        study_dir = Path(study_dir)
        return cls(study_dir.parent, study_dir.name)

    @property
    def root(self) -> Path:
        return Path(self.results_dir) / self.name

    @property
    def db(self) -> Path:
        return self.root / "study.db"

    @property
    def default_storage(self) -> str:
        """The SQLite URL of a study without ``--storage``."""
        return f"sqlite:///{self.db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def trial_dir(self, number: int) -> Path:
        return self.artifacts / str(number)

    @property
    def baseline_dir(self) -> Path:
        return self.artifacts / "baseline"

    @property
    def students(self) -> Path:
        return self.root / "students"

    @property
    def store(self) -> Path:
        """The default artifact store (a folder; ``--artifacts`` may name another)."""
        return self.root / "store"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def pareto_csv(self) -> Path:
        return self.root / "pareto.csv"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"


def teachers_dir(results_dir: Path) -> Path:
    """Teachers trained once and shared by every study under ``results_dir``."""
    return Path(results_dir) / "teachers"
