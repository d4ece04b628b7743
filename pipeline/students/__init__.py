"""The speech students: the family registry, the from-scratch transformer, the Whisper and
Hugging Face encoder families, pretrained weights (CTranslate2, packaged Whisper), fine-tuning modes,
and the CTC head's characters and decoding.

Public face: ``build_student``/``register_student``/``student_config`` (registry), ``StudentOutput``
(transformer), ``resolve_pretrained`` (pretrained), ``FreezeSpec`` (finetune).
"""
