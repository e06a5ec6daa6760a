"""The measurement agent: a small HTTP service on the target device (``server``, set up by
``settings``), its client (``client``), the bounds it enforces on connections (``limits``), on
each measurement (``sandbox``, running ``work`` in a bounded child) and on uploads (``uploads``:
what is accepted; ``store``: where it lives), and its token (``token``).
Torch-free: the agent runs where only onnxruntime, onnx and numpy are installed.
"""
