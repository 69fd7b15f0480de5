"""``python -m mqttkit pub|sub|rr|bench ...``: see :mod:`mqttkit.cli`."""

import sys

from .cli import main

sys.exit(main())
