"""Evaluation and calibration: how much quality routing keeps, what it saves, where
the thresholds should sit.

- :func:`load_dataset`, :class:`EvalRow`: JSON lines or CSV with an input and an expected output.
- :func:`run_eval`: a graph over a dataset, concurrently, resumable (``slmgraph eval``).
- :class:`OracleModel`, :class:`RecordedModel`: offline large models.
- :mod:`routing metrics <slmgraph.eval._metrics>`: PGR, APGR, CPT in the style of RouteLLM.
- :func:`sweep_thresholds`, :func:`write_thresholds`: ``slmgraph calibrate``.
"""

from ._calibrate import Calibration, OperatingPoint, Thresholds, evaluate_thresholds, sweep_thresholds, write_thresholds
from ._data import EvalRow, load_dataset, split_rows
from ._large import DEFAULT_CALL_COST, OfflineLargeModel, OracleModel, RecordedModel, current_row, load_recorded
from ._metrics import FORCED, CurvePoint, apgr, cpt, percentile, pgr, random_router_curve, threshold_curve, zero_router_curve
from ._report import routing_summary, summarize, to_markdown
from ._runner import ResultsFile, run_eval
from ._scoring import Scorer, exact_match, load_scorer, predictions

__all__ = [
    "EvalRow",
    "load_dataset",
    "split_rows",
    "OracleModel",
    "RecordedModel",
    "OfflineLargeModel",
    "current_row",
    "load_recorded",
    "DEFAULT_CALL_COST",
    "CurvePoint",
    "FORCED",
    "pgr",
    "apgr",
    "cpt",
    "threshold_curve",
    "random_router_curve",
    "zero_router_curve",
    "percentile",
    "Scorer",
    "exact_match",
    "load_scorer",
    "predictions",
    "ResultsFile",
    "run_eval",
    "summarize",
    "routing_summary",
    "to_markdown",
    "Thresholds",
    "OperatingPoint",
    "Calibration",
    "evaluate_thresholds",
    "sweep_thresholds",
    "write_thresholds",
]
