"""``python -m agents.cli``: the ``gqn-rl`` command."""

import sys

from agents.cli import main

sys.exit(main())
