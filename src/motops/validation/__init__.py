"""Data validation of the normalized tables with Great Expectations.

``validate_dataset(sequences, annotations, params, report_dir=...)`` runs the
suites (as code, in :mod:`motops.validation.suites`), writes GX Data Docs and a
JSON summary, and returns a :class:`ValidationReport`; ``check_or_raise(report)``
turns a failed report into :class:`motops.errors.ValidationFailed`.
Great Expectations is imported only when a suite runs.
"""

from motops.validation.run import ValidationReport, check_or_raise, format_row, validate_dataset

__all__ = ["ValidationReport", "check_or_raise", "format_row", "validate_dataset"]
