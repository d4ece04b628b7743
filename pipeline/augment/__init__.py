"""Acoustic damage from one code path for training and evaluation: noise at an exact SNR,
reverberation, band-limit, telephone, codec, pitch, tempo, VTLP, gain; and the evaluation's seeded
conditions.

Public face: ``AugmentConfig``/``Augmenter`` (augmentation), ``add_noise``/``NoiseBank`` (noise),
``reverberate``/``telephone_channel`` (acoustics), ``noise_conditions``/``noisy_waveforms`` (conditions).
"""
