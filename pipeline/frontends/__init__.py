"""Audio to features, batched on the device: the ``FrontEnd`` registry (fbank + CMVN, Whisper
log-mel; the waveform front-end is registered by the ``hf`` student), and the on-disk feature store.

Public face: ``FrontEnd``/``build_frontend`` (base), ``FbankConfig``/``FbankExtractor`` (fbank),
``WhisperLogMel`` (whisper_logmel), ``FeatureStore``/``compute_feature_store`` (feature_store).
"""
