"""Model export: ONNX with parity checks against PyTorch, and calibrated INT8 (QDQ) quantization."""

from motops.export.onnx_export import (
    ParityError,
    check_parity,
    detector_parity,
    export_detector,
    export_reid,
    read_onnx_metadata,
    reid_parity,
)
from motops.export.quantize import (
    detector_calibration_batches,
    int8_report_detector,
    int8_report_reid,
    quantize_detector,
    quantize_reid,
    reid_calibration_batches,
)

__all__ = [
    "ParityError",
    "check_parity",
    "detector_calibration_batches",
    "detector_parity",
    "export_detector",
    "export_reid",
    "int8_report_detector",
    "int8_report_reid",
    "quantize_detector",
    "quantize_reid",
    "read_onnx_metadata",
    "reid_calibration_batches",
    "reid_parity",
]
