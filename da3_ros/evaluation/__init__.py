"""Scoring against ground truth: metrics, per-window scoring, reports (da3-eval and training)."""
