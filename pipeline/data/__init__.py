"""What an utterance is: audio reading and writing, where its speech is (an energy detector),
manifests (JSON Lines), label sets, transcript normalisation, and datasets, padding and
duration-bucketed batching.

Public face: ``load_audio``/``read_audio`` (audio), ``Manifest``/``Utterance``/``read_manifest``/
``write_manifest`` (manifest), ``LabelSet`` (labels), ``normalize_transcript`` (text),
``LengthBucketSampler``/``UtteranceDataset``/``WaveformDataset``/``Batch`` (batching),
``speech_regions``/``trim_silence``/``has_speech`` (vad).
"""
