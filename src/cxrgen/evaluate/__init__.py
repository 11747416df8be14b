"""Evaluation: pycocoevalcap NLG metrics, CheXpert clinical efficacy, baselines, paired bootstrap."""
from cxrgen.evaluate.baselines import BASELINES, build_baseline
from cxrgen.evaluate.report import METRICS, EvalResult, evaluate, evaluate_systems

__all__ = ["BASELINES", "METRICS", "EvalResult", "build_baseline", "evaluate", "evaluate_systems"]
