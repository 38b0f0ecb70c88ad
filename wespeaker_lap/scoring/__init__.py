"""The scoring back end, numpy and scipy only: trials, cosine scoring, AS-norm, QMF, metrics, plots.

Nothing here imports torch: scores, normalisation and calibration run on any
machine that holds the embedding files.
"""
