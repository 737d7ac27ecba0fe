"""The int8 challenger: an MLP exported to ONNX and quantized statically (QDQ, calibrated).

Static quantization fixes every scale from calibration data, so a row's score does not depend
on the other rows in its batch. Dynamic quantization computes activation scales per batch, so
a row's score moves with the rows beside it: never use it for scores that must be auditable.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from fraud_core.features import N_FEATURES

ONNX_OPSET = 17
INPUT = "features"


def signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames amount sums and counts for a neural network."""
    return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)


def fit_mlp(
    train_x: np.ndarray, train_y: np.ndarray, *, seed: int = 0, max_iter: int = 60
) -> Pipeline:
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(64, 32), max_iter=max_iter, early_stopping=True, random_state=seed
        ),
    )
    with warnings.catch_warnings():
        # Iterations are capped on purpose (training time); early stopping picks the epoch.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(signed_log(train_x), np.asarray(train_y, dtype=np.int8))
    return model


def _signed_log_graph() -> onnx.ModelProto:
    shape = [None, N_FEATURES]
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Abs", [INPUT], ["abs"]),
        helper.make_node("Constant", [], ["one"], value=one),
        helper.make_node("Add", ["abs", "one"], ["abs1"]),
        helper.make_node("Log", ["abs1"], ["log"]),
        helper.make_node("Sign", [INPUT], ["sign"]),
        helper.make_node("Mul", ["sign", "log"], ["signed_log"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "signed_log",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("signed_log", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def export_mlp(model: Pipeline) -> onnx.ModelProto:
    """The fp32 ONNX graph of the MLP, taking the contract's raw features."""
    mlp = to_onnx(
        model,
        initial_types=[("transformed", FloatTensorType([None, N_FEATURES]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3},
    )
    prefix = _signed_log_graph()
    prefix.ir_version = mlp.ir_version
    merged = onnx.compose.merge_models(prefix, mlp, io_map=[("signed_log", "transformed")])
    # merge_models lists a domain once per source model; the quantizer wants each once.
    opsets = {entry.domain: entry.version for entry in merged.opset_import}
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    onnx.checker.check_model(merged)
    return merged


class _Calibration(CalibrationDataReader):
    def __init__(self, rows: np.ndarray, batch: int = 256) -> None:
        self._batches = iter([{INPUT: rows[i : i + batch]} for i in range(0, rows.shape[0], batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(fp32: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """Static int8 QDQ quantization, activations calibrated on `calibration` rows (raw features)."""
    rows = np.ascontiguousarray(calibration, dtype=np.float32)
    # The quantizer logs a warning per tensor whose type it cannot infer (they stay fp32).
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, prepared, quantized = (Path(tmp) / n for n in ("m.onnx", "p.onnx", "q.onnx"))
            onnx.save_model(fp32, source)
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
            quantize_static(
                prepared,
                quantized,
                _Calibration(rows),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                # Only the layers: quantizing raw inputs (amounts up to 1e6) to 8 bits, or
                # the log transform before the scaler, would destroy small features.
                op_types_to_quantize=["MatMul", "Gemm"],
            )
            return onnx.load_model(quantized)
    finally:
        quant_logger.setLevel(level)
