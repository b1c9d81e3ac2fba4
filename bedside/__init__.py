"""bedside: Jupyter-native compute-to-data for clinical AI.

The root package holds only what every part shares (errors, version); it imports nothing from
Jupyter so that the kernel, the sentry, the extension and the reviewer's CLI can all import it.
"""

from __future__ import annotations

from bedside.errors import Error

__version__ = "0.1.0"

__all__ = ["Error", "__version__"]
