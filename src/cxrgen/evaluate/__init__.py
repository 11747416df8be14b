"""Evaluation: pycocoevalcap NLG metrics, CheXpert clinical efficacy, baselines, paired bootstrap."""
