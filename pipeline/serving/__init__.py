"""What a deployed model needs and nothing from training: the student model dir, the
model kinds (student, teacher, cascade), inference on audio files, saying "unknown" (rejection,
its calibration, segments of long recordings), and ONNX export.

Public face: ``IntentRecognizer``/``Prediction`` (inference), ``load_model_dir``/``save_model_dir``
(model_dir), ``load_model`` (model_kinds), ``export_model`` (export), ``Rejection``/
``calibrate_threshold`` (rejection), ``calibrate`` (calibrate).
"""
