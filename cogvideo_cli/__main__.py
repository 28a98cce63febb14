"""Entry point for ``python -m cogvideo_cli``."""

from cogvideo_cli.cli.app import main

if __name__ == "__main__":
    main()
