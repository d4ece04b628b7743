"""The baseline a student must beat: ASR (faster-whisper or Hugging Face Whisper), then the
teacher on the normalised hypothesis.

Public face: ``load_asr``/``AsrConfig`` (asr), ``create_cascade``/``load_cascade``/``CascadeModel``
(model).
"""
