"""Allow `python -m medm3` as an alias of `m3`."""

from medm3.cli.main import main

main()
