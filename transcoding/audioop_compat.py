"""The C ``audioop`` module: stdlib before Python 3.13, the ``audioop-lts`` package after."""

from __future__ import annotations

import sys
import warnings

if sys.version_info >= (3, 13):
    import audioop
else:  # stdlib audioop warns about its removal in 3.13; the dependency covers that version.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

__all__ = ["audioop"]
