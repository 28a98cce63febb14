"""Checkpoint formats and conversion; torch is imported inside the functions."""
