"""``python -m service`` runs hello-server."""

from __future__ import annotations

import sys

from .cli.hello_server import main

sys.exit(main())
