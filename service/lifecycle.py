"""Where the serving process stands: loading (no core yet), serving, or draining."""

from __future__ import annotations

from service.core import NluCore
from service.errors import Unavailable


class Lifecycle:
    def __init__(self) -> None:
        self.core: NluCore | None = None
        self.draining = False

    def loaded(self) -> NluCore:
        """The core once loaded (info stays available while draining)."""
        if self.core is None:
            raise Unavailable("model is not loaded yet")
        return self.core

    def accepting(self) -> NluCore:
        """The core, if new work is accepted."""
        if self.draining:
            raise Unavailable("draining")
        return self.loaded()
