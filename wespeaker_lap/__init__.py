"""wespeaker_lap: speaker verification on frozen self-supervised speech models.

``wespeaker_lap.load_model`` loads a trained model (a package, an exp_dir or a hub
id; see :mod:`wespeaker_lap.api`). Importing the package checks the installed torch
and transformers against the ranges ``pyproject.toml`` declares
(:mod:`wespeaker_lap.versions`): outside them it logs one warning line.
"""

from wespeaker_lap.versions import TESTED, check_tested_versions

__version__ = "0.1.0"
__all__ = ["TESTED", "__version__", "check_tested_versions", "load_model"]

check_tested_versions()


def __getattr__(name: str):
    """``wespeaker_lap.load_model`` on first use (PEP 562): importing the package stays cheap."""
    if name == "load_model":
        from wespeaker_lap.api import load_model

        return load_model
    raise AttributeError(f"module 'wespeaker_lap' has no attribute {name!r}")
