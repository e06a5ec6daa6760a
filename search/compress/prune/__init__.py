"""Structured pruning with torch-pruning: the step and its space (``step``), the dependency
graph built under guards (``graph``), module handlers and patches for what torch-pruning 1.6
mis-handles (``modules``, ``patches``), and the study's dry run that finds what cannot be cut
(``plan``).
"""
