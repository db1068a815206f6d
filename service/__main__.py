"""``python -m service`` runs hello-server."""

from __future__ import annotations

import sys

from .cli.server import main

sys.exit(main())
