from __future__ import annotations

import sys

from bedside._cli import main

sys.exit(main())
