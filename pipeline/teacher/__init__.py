"""The BERT-family text teacher: its config, the Hugging Face loading, fine-tuning on transcripts,
and the export of its targets (logits, sentence vector, hidden states, attention) per transcript.

Public face: ``TeacherConfig`` (config), ``Teacher``/``load_teacher`` (model), ``train_teacher``
(train), ``export_targets``/``TeacherTargets`` (targets).
"""
