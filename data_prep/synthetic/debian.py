"""Debian's flite and festival, through their command-line programs (``make tts-voices`` installs them)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from data_prep.synthetic.speakers import Engine, EngineUnavailable, Speaker, distinct, spread
from pipeline.data.audio import load_audio


def _run_to_wav(command: list[str], output: Path, what: str) -> tuple[np.ndarray, int]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not output.is_file():
        message = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"{what}: exit {result.returncode}: {message[-1] if message else ''}")
    samples = load_audio(output, sample_rate=None)
    import soundfile

    return samples, int(soundfile.info(str(output)).samplerate)


class FliteEngine(Engine):
    name = "flite"
    install_hint = "apt-get install flite"
    VOICES = {"awb": 0, "rms": 0, "slt": 0, "kal16": 0}
    STRETCHES = (0.9, 1.0, 1.15)

    @classmethod
    def check(cls) -> None:
        if shutil.which("flite") is None:
            raise EngineUnavailable(f"flite: program not found ({cls.install_hint})")

    @classmethod
    def speakers(cls, count: int, rng: np.random.Generator) -> list[Speaker]:
        chosen = []
        for voice in ("slt", "awb", "rms", "kal16"):
            base = 170.0 if voice == "slt" else 105.0
            for _ in range(2):
                chosen.append(
                    Speaker(
                        "flite",
                        voice,
                        rate=float(rng.choice(cls.STRETCHES)),
                        pitch=spread(rng, base - 15, base + 15, 5),
                    )
                )
        return distinct([chosen[i] for i in np.r_[0 : len(chosen) : 2, 1 : len(chosen) : 2]], count)

    def synthesize(self, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory(prefix="slukd-flite-") as folder:
            output = Path(folder) / "out.wav"
            command = ["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={speaker.rate}"]
            if speaker.pitch:
                command += ["--setf", f"int_f0_target_mean={speaker.pitch}"]
            return _run_to_wav(command + ["-t", text, "-o", str(output)], output, "flite")


class FestivalEngine(Engine):
    name = "festival"
    install_hint = "apt-get install festival festvox-kallpc16k"
    VOICE_ROOT = Path("/usr/share/festival/voices")

    @classmethod
    def installed_voices(cls) -> list[str]:
        if not cls.VOICE_ROOT.is_dir():
            return []
        return sorted(path.name for path in cls.VOICE_ROOT.glob("*/*") if path.is_dir())

    @classmethod
    def check(cls) -> None:
        if shutil.which("text2wave") is None:
            raise EngineUnavailable(f"festival: text2wave not found ({cls.install_hint})")
        if not cls.installed_voices():
            raise EngineUnavailable(f"festival: no voices under {cls.VOICE_ROOT} ({cls.install_hint})")

    @classmethod
    def speakers(cls, count: int, rng: np.random.Generator) -> list[Speaker]:
        voices = cls.installed_voices()
        # Duration_Stretch moves diphone voices only; an HTS voice is one speaker.
        chosen = [
            Speaker("festival", voice, rate=stretch)
            for stretch in (1.0, 1.15)
            for voice in voices
            if stretch == 1.0 or "hts" not in voice
        ]
        return distinct(chosen, count)

    def __init__(self) -> None:
        self.check()
        # One long-lived interpreter per worker: starting festival costs ~0.6 s, a sentence ~20 ms.
        self.process = subprocess.Popen(
            ["festival", "--pipe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.folder = Path(tempfile.mkdtemp(prefix="slukd-festival-"))

    def __del__(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)

    def synthesize(self, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        output = self.folder / "out.wav"
        output.unlink(missing_ok=True)
        quoted = text.replace("\\", " ").replace('"', " ")
        commands = (
            f"(voice_{speaker.voice})\n"
            f"(Parameter.set (quote Duration_Stretch) {speaker.rate})\n"
            f'(utt.save.wave (SynthText "{quoted}") "{output}" (quote riff))\n'
            f'(format stderr "{_FESTIVAL_DONE}\\n")\n'  # stderr is unbuffered: our sync point
        )
        self.process.stdin.write(commands)
        self.process.stdin.flush()
        errors = []
        for line in self.process.stderr:
            if _FESTIVAL_DONE in line:
                break
            errors.append(line.strip())
        else:
            raise RuntimeError(f"festival: the interpreter exited ({'; '.join(errors)[-200:]})")
        if not output.is_file():
            raise RuntimeError(f"festival: no audio for {text!r} ({'; '.join(errors)[-200:]})")
        samples = load_audio(output, sample_rate=None)
        import soundfile

        return samples, int(soundfile.info(str(output)).samplerate)


_FESTIVAL_DONE = "SLUKD_FESTIVAL_DONE"
