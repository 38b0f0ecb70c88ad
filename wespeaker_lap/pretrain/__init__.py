"""Self-supervised pre-training of a small SSL model on unlabeled audio (HuBERT-style).

* :mod:`~wespeaker_lap.pretrain.features`: the unlabeled corpus in memory and the
  frame features clustered into units (39-d MFCC with deltas, or a hidden layer
  of an earlier model);
* :mod:`~wespeaker_lap.pretrain.kmeans`: MiniBatchKMeans units over those frames;
* :mod:`~wespeaker_lap.pretrain.hubert`: masked prediction of the units with a
  ``transformers.HubertModel``, saved with ``save_pretrained``;
* :mod:`~wespeaker_lap.pretrain.schema`: the checked ``train_args``
  (:class:`~wespeaker_lap.pretrain.schema.PretrainArgs`).

No speaker label enters pre-training: the corpus is a list of wav.scp files.
"""
