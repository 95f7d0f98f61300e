"""A helper thread for tests: whatever it raises (an assertion included) is raised again in the
thread that asks for its result, instead of being lost."""

from __future__ import annotations

import threading


class Background(threading.Thread):
    """Runs ``target()`` at once; ``result`` waits for it and raises its exception in the caller."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.error: BaseException | None = None
        self.value = None
        self.start()

    def run(self):
        try:
            self.value = self.target()
        except BaseException as exc:        # handed to the caller by result()
            self.error = exc

    def result(self, timeout: float = 60.0):
        self.join(timeout)
        assert not self.is_alive(), f"the background thread did not finish within {timeout:g} s"
        if self.error is not None:
            raise self.error
        return self.value
