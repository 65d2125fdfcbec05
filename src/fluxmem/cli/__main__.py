"""``python -m fluxmem.cli`` runs the command line."""

import sys

try:
    from . import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself is importing
    print("fluxmem: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
