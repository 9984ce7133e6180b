"""``python -m quiver``: the same command line as the ``quiver`` script."""

from quiver.cli import main

if __name__ == "__main__":
    main()
