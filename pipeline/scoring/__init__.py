"""How predictions are scored: accuracy, macro-F1, calibration, slot accuracy, WER/CER.
Shared by the teacher, the cascade and evaluation, so it sits below all three.

Public face: ``accuracy``, ``macro_f1``, ``classification_report``, ``error_rates`` (metrics).
"""
