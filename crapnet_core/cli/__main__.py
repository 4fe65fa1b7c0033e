"""``python -m crapnet_core.cli``: the ``crapnet`` command."""

import sys

from . import main

sys.exit(main())
