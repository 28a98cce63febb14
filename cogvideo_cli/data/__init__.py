"""Datasets: sources, video probing, sampling rules, data.jsonl writing."""
