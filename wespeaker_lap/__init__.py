"""wespeaker_lap: speaker verification on frozen self-supervised speech models."""

__version__ = "0.1.0"
