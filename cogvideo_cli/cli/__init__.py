"""The Typer layer: parse options, call one engine function, show the result."""
