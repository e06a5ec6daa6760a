"""Per-layer precision with ONNX Runtime: static QDQ quantization (``qdq``, ``nodes``,
``step``), layer groups named or derived from the model (``groups``, ``derive_groups``), how a
plan is encoded for the sampler (``encoding``), calibration computed once per float model
(``calibration``), float16 groups (``fp16``), what really ran (``audit``) and the per-group
sensitivity pass (``sensitivity``).
"""
