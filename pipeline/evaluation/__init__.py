"""Scoring models on splits, clean and under acoustic conditions, their speed, the eval files, and
the report that reads only those files.

Public face: ``evaluate``/``EvaluateConfig`` (evaluate), ``measure_speed`` (speed),
``write_report`` (report).
"""
