"""ONNX export of the whole extractor (waveform + lengths -> embeddings) and its runtime.

* :mod:`wespeaker_lap.export.exporter` (torch): a trained model directory ->
  one ONNX file with dynamic batch and time axes and its pooling graph (for long
  audio in windows), verified against PyTorch.
* :mod:`wespeaker_lap.export.runtime` (numpy, soundfile, soxr, onnxruntime;
  never torch): audio files -> embeddings with that file.
* :mod:`wespeaker_lap.export.identity` (standard library only): the model's
  identity stored in the ONNX metadata and checked when the file is loaded.
* :mod:`wespeaker_lap.export.variants` (onnx, onnxruntime; never torch): int8
  and float16 variants of an exported file.

This ``__init__`` imports nothing, so that the runtime path stays free of torch.
"""
