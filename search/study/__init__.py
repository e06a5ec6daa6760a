"""The study: what it is (:mod:`~search.study.spec`), the ask/tell loop
(:mod:`~search.study.loop`), and the once-per-study work around it: setup and joining, the
references (baseline, uniform int8, sensitivity), the warm start, plans per student, samplers,
resume, confirmation of the front, model checks and preflight.

``search.study.StudySpec``, ``open_study`` and ``run_study`` are public names (``reproduce.py``
scripts written by ``search export`` import them).
"""

from search.study.loop import run_study
from search.study.spec import StudySpec, open_study

__all__ = ["StudySpec", "open_study", "run_study"]
