"""The core engine: errors, variants, workspace, rules, templates; torch-free at import."""
