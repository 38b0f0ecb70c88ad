"""The bottom layer: files written atomically, Kaldi tables, embedding files, checkpoints.

Nothing here imports another part of the package.
"""
