"""The Python API: load a speaker model, embed audio, score, verify, enrol, identify.

>>> import wespeaker_lap
>>> # model = wespeaker_lap.load_model("exp/lap_astp/package")    # or an exp_dir, or org/name
>>> # model.verify("a.wav", "b.wav")                             # score, llr, decision

* :func:`load_model` (:mod:`~wespeaker_lap.api.loading`): a model package, a
  training ``exp_dir``, an exported ``.onnx`` file or a hub id;
* :class:`SpeakerModel` (:mod:`~wespeaker_lap.api.model`): ``embed``, ``score``,
  ``score_matrix``, ``verify``, ``enroll``, ``identify``;
* :mod:`~wespeaker_lap.api.package`: the package's files and manifest;
  :mod:`~wespeaker_lap.api.hub`: hub ids, download and upload.

Nothing here imports torch until a PyTorch model is loaded (``runtime="torch"``).
See ``docs/python_api.md``.
"""

from wespeaker_lap.api.loading import load_model, source_kind
from wespeaker_lap.api.model import Identification, SpeakerModel, Speakers, VerifyResult
from wespeaker_lap.api.package import PackageError

__all__ = ["Identification", "PackageError", "SpeakerModel", "Speakers", "VerifyResult",
           "load_model", "source_kind"]
