"""``python -m app.cli``: the same as ``bgremove``."""

from app.cli.main import main

main()
