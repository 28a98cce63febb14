"""torchrun commands, environments, process supervision and log watching."""
