"""Metrics that check explanations against ground truth and against the model."""
