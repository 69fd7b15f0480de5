"""``python -m mqttkit pub|sub|bench ...``: see :mod:`mqttkit.cli`."""

import sys

from .cli import main

sys.exit(main())
