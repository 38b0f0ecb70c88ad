"""The ``wespeaker-lap`` command: embed, similarity and verify with a trained model directory."""
