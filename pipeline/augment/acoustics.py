"""Acoustic variety on padded batches, on any device: rooms, channels, codecs, voices, levels.

Every function takes a zero-padded ``[B, S]`` batch (``[B, T, F]`` features for VTLP) and its
``[B]`` valid lengths, works on the tensors' own device, and returns a batch that is zero beyond
each (new) length. Randomness comes from an optional ``torch.Generator``, so a seed reproduces.
Training (:class:`pipeline.augment.augmentation.Augmenter`) and evaluation (:mod:`pipeline.augment.conditions`) share them.

- Room: :func:`synthetic_rirs` draws room impulse responses from Polack's statistical model
  (a direct path, then Gaussian noise under an exponential envelope that falls 60 dB in RT60,
  at a chosen direct-to-reverberant ratio); :func:`reverberate` convolves them in
  (``torchaudio.functional.fftconvolve``), keeping the length and the level;
  :func:`schroeder_rt60` measures RT60 back (Schroeder backward integration, a T30 fit).
- Channel: :func:`band_limit` (a windowed-sinc FIR band-pass from ``scipy.signal.firwin``,
  applied by FFT convolution, per-utterance band edges) and :func:`telephone_channel`
  (300-3400 Hz, 8 kHz sampling, G.711 mu-law, and back to the batch's rate).
- Codec: :func:`mu_law_codec`, 8-bit G.711 mu-law quantisation
  (``torchaudio.functional.mu_law_encoding``/``mu_law_decoding``).
- Voice: :func:`speed_perturb` (Kaldi-style speed perturbation by resampling: tempo and
  pitch together), :func:`pitch_shift` (phase-vocoder stretch and resampling, as
  ``torchaudio.functional.pitch_shift``; duration kept), :func:`change_tempo` (phase vocoder
  only: pitch kept, length changes) and :func:`vtlp`, vocal-tract-length perturbation (Jaitly
  and Hinton 2013) on the log-mel features: each bin is read at Kaldi's piecewise-linearly
  warped frequency (``torchaudio.compliance.kaldi.vtln_warp_freq``), interpolated between bins.
- Level: :func:`apply_gain` and :func:`clip` (hard clipping at a fraction of the peak).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import scipy.signal
import torch
import torchaudio.functional
from torch import Tensor
from torchaudio.compliance.kaldi import mel_scale, vtln_warp_freq

from pipeline.augment.noise import draw_device, valid_mask
from pipeline.data.audio import SAMPLE_RATE

DECAY_DB = 60.0  # RT60: the time the reverberant energy takes to fall by 60 dB
TELEPHONE_BAND_HZ = (300.0, 3400.0)  # ITU-T G.712 pass band
TELEPHONE_RATE = 8000
MU_LAW_CHANNELS = 256  # G.711: 8 bits per sample
BAND_PASS_TAPS = 511  # FIR length at 16 kHz: about 100 Hz transition, 50 dB stop band (Hamming)
PHASE_VOCODER_FFT = 512
PITCH_RATE_GRID = 100  # Hz: pitch shifts resample between multiples of this
VTLN_LOW_HZ = 100.0  # Kaldi's default knees of the VTLN warp
VTLN_HIGH_HZ = -500.0  # <= 0: offset from the filterbank's high frequency


def _lengths(lengths: Tensor, width: int, device: torch.device) -> Tensor:
    return torch.as_tensor(lengths, device=device).long().clamp(0, width)


def _per_row(value: Tensor | float, batch_size: int, device: torch.device) -> Tensor:
    """A number or a ``[B]`` tensor as a float64 ``[B]`` tensor on ``device``."""
    values = torch.as_tensor(value, dtype=torch.float64, device=device)
    return values.expand(batch_size) if values.dim() == 0 else values


def _energy(waveforms: Tensor) -> Tensor:
    return waveforms.double().pow(2).sum(-1)


def _match_energy(output: Tensor, reference: Tensor) -> Tensor:
    """Scale each row of ``output`` to the energy of the same row of ``reference``."""
    scale = (_energy(reference) / _energy(output).clamp_min(1e-30)).sqrt()
    scale = torch.where(_energy(output) > 0, scale, torch.zeros_like(scale))
    return output * scale.to(output.dtype)[:, None]


# ----------------------------------------------------------------------------- room


def synthetic_rirs(
    rt60_s: Tensor | Sequence[float],
    direct_to_reverberant_db: Tensor | Sequence[float] | float = 5.0,
    sample_rate: int = SAMPLE_RATE,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Room impulse responses from Polack's statistical model of reverberation.

    Each response is a unit direct path at sample 0 followed by Gaussian noise under the
    envelope ``exp(-3 ln(10) t / RT60)`` (energy falls 60 dB in RT60), scaled so that the
    direct path's energy over the tail's is the given ratio. All rows are ``ceil(max RT60 *
    sample_rate)`` samples long: the longest tail decays to -60 dB, shorter ones further.

    Args:
        rt60_s: ``[B]`` reverberation times in seconds.
        direct_to_reverberant_db: ``[B]`` (or one number) direct-to-reverberant energy ratio.
        sample_rate: the rate of the responses.
        generator: source of randomness; ``None`` uses torch's global one.
        device: where the result lives (default CPU).

    Returns:
        ``[B, L]`` float32 responses.
    """
    rt60 = torch.as_tensor(rt60_s, dtype=torch.float64).reshape(-1)
    if rt60.numel() == 0 or rt60.min() <= 0:
        raise ValueError(f"rt60_s must be positive seconds, got {rt60.tolist()}")
    batch_size = rt60.numel()
    length = max(2, math.ceil(float(rt60.max()) * sample_rate))
    draws = torch.randn((batch_size, length), generator=generator, device=draw_device(generator, device))
    tail = draws.to(device=device, dtype=torch.float64)
    rt60 = rt60.to(tail.device)
    time = torch.arange(length, device=tail.device, dtype=torch.float64) / sample_rate
    tail = tail * torch.exp(-3.0 * math.log(10.0) * time[None, :] / rt60[:, None])
    tail[:, 0] = 0.0
    ratio = 10.0 ** (_per_row(direct_to_reverberant_db, batch_size, tail.device) / 10.0)
    tail = tail / (_energy(tail) * ratio).sqrt()[:, None]  # tail energy = 1 / ratio
    tail[:, 0] = 1.0
    return tail.float()


def schroeder_rt60(
    rirs: Tensor, sample_rate: int = SAMPLE_RATE, fit_db: tuple[float, float] = (-5.0, -35.0)
) -> Tensor:
    """RT60 measured from impulse responses: Schroeder's backward-integrated energy decay curve,
    a least-squares line through it between ``fit_db`` (T30 by default), extrapolated to -60 dB.

    Args:
        rirs: ``[B, L]`` impulse responses.
        sample_rate: their rate.
        fit_db: the stretch of the decay curve the line is fitted to (dB below the total).

    Returns:
        ``[B]`` float64 RT60s in seconds.
    """
    energy = rirs.double().pow(2).flip(-1).cumsum(-1).flip(-1)
    decay_db = 10.0 * torch.log10(energy / energy[:, :1].clamp_min(1e-300))
    time = torch.arange(rirs.shape[-1], dtype=torch.float64, device=rirs.device) / sample_rate
    high, low = max(fit_db), min(fit_db)
    result = []
    for row in decay_db:
        inside = (row <= high) & (row >= low)
        t, level = time[inside], row[inside]
        slope = ((t - t.mean()) * (level - level.mean())).sum() / (t - t.mean()).pow(2).sum()
        result.append(-DECAY_DB / slope)
    return torch.stack(result)


def reverberate(waveforms: Tensor, lengths: Tensor, rirs: Tensor) -> Tensor:
    """Convolve each utterance with its room impulse response.

    The output keeps each utterance's length (the reverberant tail past its end is cut) and its
    energy over the valid samples, so reverberation changes the sound, not the level.

    Args:
        waveforms: ``[B, S]`` padded batch.
        lengths: ``[B]`` valid samples per utterance.
        rirs: ``[B, L]`` impulse responses, the direct path at sample 0 (as
            :func:`synthetic_rirs` makes them).

    Returns:
        ``[B, S]`` new tensor, zero beyond each length.
    """
    batch_size, width = waveforms.shape
    if rirs.dim() != 2 or rirs.shape[0] != batch_size:
        raise ValueError(f"need one impulse response per utterance, got {tuple(rirs.shape)} for {batch_size}")
    valid = valid_mask(_lengths(lengths, width, waveforms.device), width, waveforms.device)
    clean = waveforms * valid
    wet = torchaudio.functional.fftconvolve(clean.float(), rirs.to(clean.device).float())[:, :width]
    return _match_energy(wet * valid, clean).to(waveforms.dtype)


# ----------------------------------------------------------------------------- channel


def band_pass_filters(
    low_hz: Tensor | Sequence[float],
    high_hz: Tensor | Sequence[float],
    sample_rate: int = SAMPLE_RATE,
    taps: int = BAND_PASS_TAPS,
) -> Tensor:
    """Linear-phase FIR band-pass filters, one per row (``scipy.signal.firwin``, Hamming window).

    A low edge at or below 0 Hz gives a low-pass, a high edge at or above Nyquist a high-pass.

    Returns:
        ``[B, taps]`` float32 filters (``taps`` odd).
    """
    nyquist = sample_rate / 2
    lows = torch.as_tensor(low_hz, dtype=torch.float64).reshape(-1).tolist()
    highs = torch.as_tensor(high_hz, dtype=torch.float64).reshape(-1).tolist()
    if len(lows) != len(highs):
        raise ValueError(f"{len(lows)} low edges but {len(highs)} high edges")
    taps = taps | 1  # odd: a type I filter can pass both ends
    filters = []
    for low, high in zip(lows, highs, strict=True):
        if not low < high:
            raise ValueError(f"band edges must be low < high, got {low:g} and {high:g} Hz")
        edges = ([low] if low > 0 else []) + ([high] if high < nyquist else [])
        if not edges:
            response = scipy.signal.unit_impulse(taps, "mid")
        else:
            response = scipy.signal.firwin(taps, edges, pass_zero=low <= 0, fs=sample_rate)
        filters.append(torch.as_tensor(response, dtype=torch.float32))
    return torch.stack(filters)


def band_limit(
    waveforms: Tensor,
    lengths: Tensor,
    low_hz: Tensor | Sequence[float] | float,
    high_hz: Tensor | Sequence[float] | float,
    sample_rate: int = SAMPLE_RATE,
    taps: int = BAND_PASS_TAPS,
) -> Tensor:
    """Keep only ``low_hz``..``high_hz`` of each utterance (zero-phase FIR, by FFT convolution).

    Args:
        waveforms: ``[B, S]`` padded batch.
        lengths: ``[B]`` valid samples per utterance.
        low_hz, high_hz: ``[B]`` (or one number each) band edges in Hz.
        sample_rate: the batch's rate.
        taps: filter length (made odd); longer is sharper.

    Returns:
        ``[B, S]`` new tensor, zero beyond each length.
    """
    batch_size, width = waveforms.shape
    device = waveforms.device
    filters = band_pass_filters(
        _per_row(low_hz, batch_size, torch.device("cpu")),
        _per_row(high_hz, batch_size, torch.device("cpu")),
        sample_rate,
        taps,
    ).to(device)
    valid = valid_mask(_lengths(lengths, width, device), width, device)
    delay = filters.shape[1] // 2  # linear phase: crop the group delay away
    filtered = torchaudio.functional.fftconvolve((waveforms * valid).float(), filters)
    return (filtered[:, delay : delay + width] * valid).to(waveforms.dtype)


def mu_law_codec(waveforms: Tensor, lengths: Tensor, quantization_channels: int = MU_LAW_CHANNELS) -> Tensor:
    """G.711-style mu-law companding and quantisation (8 bits by default), encode then decode.

    Samples are clipped to [-1, 1] first, as a codec's input is.

    Returns:
        ``[B, S]`` new tensor, zero beyond each length.
    """
    width = waveforms.shape[1]
    valid = valid_mask(_lengths(lengths, width, waveforms.device), width, waveforms.device)
    codes = torchaudio.functional.mu_law_encoding(waveforms.float().clamp(-1.0, 1.0), quantization_channels)
    decoded = torchaudio.functional.mu_law_decoding(codes, quantization_channels)
    return (decoded * valid).to(waveforms.dtype)


def telephone_channel(
    waveforms: Tensor,
    lengths: Tensor,
    sample_rate: int = SAMPLE_RATE,
    codec: bool = True,
    band_hz: tuple[float, float] = TELEPHONE_BAND_HZ,
) -> Tensor:
    """A narrow-band telephone line: the 300-3400 Hz band, 8 kHz sampling, 8-bit mu-law
    (G.711), and back to ``sample_rate`` for the model. Length kept.

    Args:
        waveforms: ``[B, S]`` padded batch.
        lengths: ``[B]`` valid samples per utterance.
        sample_rate: the batch's rate.
        codec: apply the mu-law codec at 8 kHz.
        band_hz: the pass band.

    Returns:
        ``[B, S]`` new tensor, zero beyond each length.
    """
    width = waveforms.shape[1]
    lengths = _lengths(lengths, width, waveforms.device)
    band = band_limit(waveforms, lengths, band_hz[0], band_hz[1], sample_rate)
    narrow = torchaudio.functional.resample(band.float(), sample_rate, TELEPHONE_RATE)
    if codec:
        narrow_lengths = (lengths * TELEPHONE_RATE + sample_rate - 1) // sample_rate
        narrow = mu_law_codec(narrow, narrow_lengths)
    wide = torchaudio.functional.resample(narrow, TELEPHONE_RATE, sample_rate)
    output = torch.zeros_like(waveforms, dtype=wide.dtype)
    keep = min(width, wide.shape[1])
    output[:, :keep] = wide[:, :keep]
    return (output * valid_mask(lengths, width, waveforms.device)).to(waveforms.dtype)


# ----------------------------------------------------------------------------- voice


def _groups(values: Sequence[float]) -> list[tuple[float, list[int]]]:
    """Rows grouped by equal value, in ascending order of value."""
    rows: dict[float, list[int]] = {}
    for row, value in enumerate(values):
        rows.setdefault(float(value), []).append(row)
    return sorted(rows.items())


def speed_perturb(
    waveforms: Tensor,
    lengths: Tensor,
    factors: Tensor | Sequence[float],
    sample_rate: int = SAMPLE_RATE,
) -> tuple[Tensor, Tensor]:
    """Speed perturbation: tempo and pitch change together, as Kaldi's ``sox speed``.

    An utterance with factor ``f`` is treated as if recorded at ``round(sample_rate * f)`` Hz
    and resampled to ``sample_rate``: 1.1 plays 1.1x faster, with about ``length / 1.1``
    samples. One :func:`torchaudio.functional.resample` call per distinct factor.

    Args:
        waveforms: ``[B, S]`` padded batch.
        lengths: ``[B]`` valid samples per utterance.
        factors: ``[B]`` speed factor per utterance.
        sample_rate: the batch's sample rate.

    Returns:
        ``([B, S'], [B])``: the perturbed batch, ``S'`` the longest new length, zero-padded;
        and the new lengths, ``ceil(length * sample_rate / round(sample_rate * f))``, exactly
        the length resampling that utterance alone gives.
    """
    batch_size = waveforms.shape[0]
    factor_list = [float(factor) for factor in torch.as_tensor(factors, dtype=torch.float64).tolist()]
    if len(factor_list) != batch_size or min(factor_list, default=1.0) <= 0:
        raise ValueError(f"need {batch_size} positive speed factors, got {factor_list}")
    device = waveforms.device
    lengths = torch.as_tensor(lengths, device=device).long().clamp(0, waveforms.shape[1])
    factor_of_row = torch.tensor(factor_list, dtype=torch.float64)
    new_lengths = lengths.clone()
    groups: list[tuple[Tensor, Tensor]] = []
    for factor in sorted(set(factor_list)):
        rows = (factor_of_row == factor).nonzero().squeeze(1).to(device)
        orig_rate = round(sample_rate * factor)
        divisor = math.gcd(orig_rate, sample_rate)
        orig_rate, new_rate = orig_rate // divisor, sample_rate // divisor
        longest = int(lengths[rows].max())
        group = waveforms[rows, :longest]
        if orig_rate != new_rate and longest > 0:
            group = torchaudio.functional.resample(group, orig_rate, new_rate)
        new_lengths[rows] = (lengths[rows] * new_rate + orig_rate - 1) // orig_rate  # ceil, as resample
        groups.append((rows, group))
    width = int(new_lengths.max()) if batch_size else 0
    output = waveforms.new_zeros((batch_size, width))
    for rows, group in groups:
        output[rows, : group.shape[1]] = group
    return output * valid_mask(new_lengths, width, device), new_lengths


def pitch_shift(
    waveforms: Tensor, lengths: Tensor, semitones: Tensor | Sequence[float], sample_rate: int = SAMPLE_RATE
) -> Tensor:
    """Shift each utterance's pitch (the whole spectrum, formants too) by its number of
    semitones, keeping its duration: a phase-vocoder tempo change (:func:`change_tempo`) by the
    shift's frequency ratio, then resampling by that ratio, as ``torchaudio.functional.pitch_shift``
    does, but with the ratio rounded to a rate on a 100 Hz grid (within 0.1 semitone at 16 kHz)
    so that the resampling kernel stays small. One pass per distinct shift.

    Returns:
        ``[B, S]`` new tensor, zero beyond each length.
    """
    batch_size, width = waveforms.shape
    steps = torch.as_tensor(semitones, dtype=torch.float64).reshape(-1).tolist()
    if len(steps) != batch_size:
        raise ValueError(f"need {batch_size} pitch shifts, got {len(steps)}")
    lengths = _lengths(lengths, width, waveforms.device)
    output = waveforms.clone()
    for step, rows in _groups(steps):
        index = torch.tensor(rows, device=waveforms.device)
        longest = int(lengths[index].max())
        orig_rate = round(sample_rate * 2.0 ** (step / 12.0) / PITCH_RATE_GRID) * PITCH_RATE_GRID
        if orig_rate == sample_rate or longest == 0:
            continue
        ratio = orig_rate / sample_rate
        group = waveforms[index, :longest]
        stretched, _ = change_tempo(group, lengths[index], [1.0 / ratio] * len(rows))
        divisor = math.gcd(orig_rate, sample_rate)
        shifted = torchaudio.functional.resample(
            stretched.float(), orig_rate // divisor, sample_rate // divisor
        )
        keep = min(longest, shifted.shape[1])
        output[index, :longest] = 0.0
        output[index, :keep] = shifted[:, :keep].to(waveforms.dtype)
    return output * valid_mask(lengths, width, waveforms.device)


def change_tempo(
    waveforms: Tensor, lengths: Tensor, factors: Tensor | Sequence[float]
) -> tuple[Tensor, Tensor]:
    """Change each utterance's tempo by its factor, keeping its pitch (phase vocoder on a
    512-point STFT, one pass per distinct factor). 1.1 is 10% faster and shorter.

    Returns:
        ``([B, S'], [B])``: the batch, ``S'`` the longest new length, and the new lengths
        ``round(length / factor)``.
    """
    batch_size, width = waveforms.shape
    factor_list = torch.as_tensor(factors, dtype=torch.float64).reshape(-1).tolist()
    if len(factor_list) != batch_size or min(factor_list, default=1.0) <= 0:
        raise ValueError(f"need {batch_size} positive tempo factors, got {factor_list}")
    device = waveforms.device
    lengths = _lengths(lengths, width, device)
    new_lengths = lengths.clone()
    for factor, rows in _groups(factor_list):
        index = torch.tensor(rows, device=device)
        new_lengths[index] = torch.round(lengths[index].double() / factor).long()
    output = waveforms.new_zeros((batch_size, int(new_lengths.max()) if batch_size else 0))
    hop = PHASE_VOCODER_FFT // 4
    window = torch.hann_window(PHASE_VOCODER_FFT, device=device)
    phase_advance = torch.linspace(0, math.pi * hop, PHASE_VOCODER_FFT // 2 + 1, device=device)[..., None]
    for factor, rows in _groups(factor_list):
        index = torch.tensor(rows, device=device)
        longest = int(lengths[index].max())
        if factor == 1.0 or longest == 0:
            output[index, :longest] = waveforms[index, :longest]
            continue
        spectrum = torch.stft(waveforms[index, :longest].float(), PHASE_VOCODER_FFT, hop, window=window,
                              return_complex=True)  # fmt: skip
        stretched = torchaudio.functional.phase_vocoder(spectrum, factor, phase_advance)
        new_width = round(longest / factor)
        audio = torch.istft(stretched, PHASE_VOCODER_FFT, hop, window=window, length=new_width)
        output[index, :new_width] = audio.to(output.dtype)
    return output * valid_mask(new_lengths, output.shape[1], device), new_lengths


def vtlp(
    features: Tensor,
    lengths: Tensor,
    warp_factors: Tensor | Sequence[float],
    sample_rate: int = SAMPLE_RATE,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> Tensor:
    """Vocal-tract-length perturbation on log-mel features (Jaitly and Hinton 2013).

    Bin ``i`` of an utterance with factor ``a`` takes the value the features have at Kaldi's
    VTLN-warped frequency of bin ``i``'s centre (about ``centre / a`` between the warp's knees,
    ``torchaudio.compliance.kaldi.vtln_warp_freq``), linearly interpolated between bins: content
    moves up in frequency by ``a`` (``a > 1`` sounds like a shorter vocal tract). Working on
    the features is an approximation of recomputing the filterbank with warped filters (which
    needs the power spectrum); on CMVN-normalised features it also interpolates the
    normalisation, which varies slowly across bins.

    Args:
        features: ``[B, T, F]`` padded log-mel features (``F`` mel bins, Kaldi layout).
        lengths: ``[B]`` valid frames (padding stays as it is: zero stays zero).
        warp_factors: ``[B]`` warp factors, typically 0.9 to 1.1.
        sample_rate, low_freq, high_freq: the filterbank's settings (``high_freq <= 0`` is an
            offset from Nyquist), as in :class:`pipeline.frontends.fbank.FbankConfig`.

    Returns:
        ``[B, T, F]`` new tensor.
    """
    batch_size, _, num_bins = features.shape
    factors = torch.as_tensor(warp_factors, dtype=torch.float64).reshape(-1).tolist()
    if len(factors) != batch_size or min(factors, default=1.0) <= 0:
        raise ValueError(f"need {batch_size} positive warp factors, got {factors}")
    high = high_freq if high_freq > 0 else sample_rate / 2 + high_freq
    mel_low, mel_high = (
        mel_scale(torch.tensor(low_freq, dtype=torch.float64)),
        mel_scale(torch.tensor(high, dtype=torch.float64)),
    )
    delta = (mel_high - mel_low) / (num_bins + 1)
    centres_mel = mel_low + delta * torch.arange(1, num_bins + 1, dtype=torch.float64)
    centres_hz = 700.0 * (torch.exp(centres_mel / 1127.0) - 1.0)
    vtln_high = VTLN_HIGH_HZ if VTLN_HIGH_HZ > 0 else high + VTLN_HIGH_HZ
    positions = []
    for factor in factors:
        warped = vtln_warp_freq(VTLN_LOW_HZ, vtln_high, low_freq, high, factor, centres_hz)
        positions.append((mel_scale(warped) - mel_low) / delta - 1.0)
    position = torch.stack(positions).clamp(0, num_bins - 1).to(features.device)  # [B, F]
    below = position.floor().long().clamp_max(num_bins - 2)
    weight = (position - below).to(features.dtype)[:, None, :]
    index = below[:, None, :].expand(-1, features.shape[1], -1)
    lower = features.gather(2, index)
    upper = features.gather(2, index + 1)
    warped_features = lower + weight * (upper - lower)
    valid = valid_mask(
        _lengths(lengths, features.shape[1], features.device), features.shape[1], features.device
    )
    return torch.where(valid[:, :, None], warped_features, features)


# ----------------------------------------------------------------------------- level


def apply_gain(waveforms: Tensor, gain_db: Tensor | Sequence[float] | float) -> Tensor:
    """Each utterance times its gain (``[B]`` or one number, in dB); padding stays zero."""
    gain = 10.0 ** (_per_row(gain_db, waveforms.shape[0], waveforms.device) / 20.0)
    return waveforms * gain.to(waveforms.dtype)[:, None]


def clip(waveforms: Tensor, lengths: Tensor, ratio: Tensor | Sequence[float] | float) -> Tensor:
    """Hard clipping at ``ratio`` (``[B]`` or one number in (0, 1]) of each utterance's peak.

    Returns:
        ``[B, S]`` new tensor, zero beyond each length.
    """
    batch_size, width = waveforms.shape
    valid = valid_mask(_lengths(lengths, width, waveforms.device), width, waveforms.device)
    signal = waveforms * valid
    limit = signal.abs().amax(-1) * _per_row(ratio, batch_size, waveforms.device).to(waveforms.dtype)
    return torch.maximum(torch.minimum(signal, limit[:, None]), -limit[:, None])
