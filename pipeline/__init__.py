"""slukd: spoken intent classification by distilling a BERT teacher into a speech transformer."""

__version__ = "0.1.0"
