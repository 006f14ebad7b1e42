"""C{python -m kaf}: the C{kaf} command."""
from kaf.cli import main

main()
