"""The measurement agent: a small HTTP service on the target device (``server``), its client
(``client``), the bounds it enforces on every request (``limits``) and its token (``token``).
Torch-free: the agent runs where only onnxruntime and numpy are installed.
"""
