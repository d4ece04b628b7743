"""slukd: spoken intent classification by distilling a BERT teacher into a speech transformer.

The subpackages are the stages, lowest first: ``core``, ``data``, ``scoring``, ``frontends``,
``augment``, ``teacher``, ``students``, ``cascade``, ``serving``, ``training``, ``evaluation``, ``cli``.

The public face for users is ``from pipeline import IntentRecognizer``, imported on first use so
that ``import pipeline`` stays cheap.
"""

from pipeline.core.version import __version__

__all__ = ["IntentRecognizer", "__version__"]


def __getattr__(name: str):
    if name == "IntentRecognizer":
        from pipeline.serving.inference import IntentRecognizer

        return IntentRecognizer
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
