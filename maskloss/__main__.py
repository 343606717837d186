"""``python -m maskloss``: the same as the ``maskloss`` command."""

import sys

from maskloss.cli import main

sys.exit(main())
