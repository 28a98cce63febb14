"""Code that runs under torchrun on CUDA or CPU through diffusers."""
