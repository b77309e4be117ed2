"""``python -m stkpay``: the same as the ``stkpay`` script."""

import sys

from stkpay.cli import main

sys.exit(main())
