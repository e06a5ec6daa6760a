"""Export one trial for use elsewhere: the measured ONNX file byte for byte, its ``model.pt2``
(checked, never loaded), ``trial.json``, ``reproduce.py`` and a README. Reads what the study
stored (the typed trial record, :mod:`search.record`); imports nothing of ``search.trial``.
"""
