"""cogvx: one command line from nothing to trained and sampled CogVideoX models."""

__version__ = "0.1.0"
