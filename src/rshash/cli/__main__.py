"""``python -m rshash.cli VERB ...``, as the ``rshash`` script."""

import sys

from rshash.cli import main

sys.exit(main())
