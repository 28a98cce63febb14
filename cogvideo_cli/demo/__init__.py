"""The end-to-end demo: every stage of cogvx on a tiny model, on any machine."""
