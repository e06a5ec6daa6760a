"""ONNX Runtime's op types by how they compute: the one table the measurement's kernel counts
(:mod:`search.measure.kernels`) and the per-group audit (:mod:`search.compress.quantize.audit`)
both read."""

from __future__ import annotations

# Ops that compute a layer with weights in integer arithmetic (CPU provider fusions of QDQ
# patterns and quantized contrib ops).
# Each with the input that holds its weight (the kernel audit follows it back to its layer).
INTEGER_WEIGHT_INPUT = {
    "QLinearConv": 3,
    "QGemm": 3,
    "QLinearMatMul": 3,
    "MatMulInteger": 1,
    "ConvInteger": 1,
    "MatMulIntegerToFloat": 1,
    "DynamicQuantizeMatMul": 1,
    "MatMulNBits": 1,
    "QAttention": 1,
}
INTEGER_LAYER_OPS = frozenset(INTEGER_WEIGHT_INPUT)
# Every op that computes in integer arithmetic: the layers and the elementwise/pooling ops the
# provider fuses around them. Anything else that computes a layer runs in floating point.
INTEGER_OPS = INTEGER_LAYER_OPS | {
    "QLinearAdd",
    "QLinearMul",
    "QLinearConcat",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearReduceMean",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearSoftmax",
    "QLinearWhere",
}
# Layer ops (with weights) that compute in float, including the provider's fused forms.
FLOAT_LAYER_OPS = {
    "Conv",
    "FusedConv",
    "ConvTranspose",
    "Gemm",
    "FusedGemm",
    "MatMul",
    "FusedMatMul",
}
