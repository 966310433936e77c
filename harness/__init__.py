"""trustlab: when a reverse proxy talks HTTPS to its backend, does it check who answered?"""

from __future__ import annotations

__version__ = "0.1.0"
