"""The bottom layer: files written atomically, Kaldi tables, embedding files, checkpoints,
audio decoding and resampling (``audio``: soundfile and soxr, no torch).

Nothing here imports another part of the package.
"""
