"""``python -m beyondbp``: the CLI, for environments without the console script."""

from beyondbp.cli import main

main()
