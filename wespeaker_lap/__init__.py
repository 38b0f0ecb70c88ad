"""wespeaker_lap: speaker verification on frozen self-supervised speech models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``wespeaker_lap.load_model`` on first use (PEP 562): importing the package stays cheap."""
    if name == "load_model":
        from wespeaker_lap.api import load_model

        return load_model
    raise AttributeError(f"module 'wespeaker_lap' has no attribute {name!r}")
