"""Backends that run the work: MindSpeed-MM and diffusers."""
