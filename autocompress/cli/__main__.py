"""``python -m autocompress.cli``: the same as the ``autocompress`` command."""

import sys

from autocompress.cli import main

sys.exit(main())
