"""The compression techniques, one folder or file each: ``prune/`` (torch-pruning),
``quantize/`` (ONNX Runtime QDQ, groups, calibration, fp16, sensitivity), ``lowrank`` and
``svd`` (truncated SVD), ``distill`` (knowledge distillation) and ``onnx_export``. Each declares
its own space section and trial config part next to its code, and the step registry
(:mod:`search.compress.steps`) lists them. Knows no study, trial, measurement or task.
"""
