"""The one exception root of tinyad, and its meaningful subclasses.

Library code raises these; only the CLI turns them into a message and an exit code.
The build side (``toolchain``) uses the same root so that every user mistake, on
either side, reaches the user as one line, never as a traceback.
"""


class TinyadError(Exception):
    """Root of every error tinyad reports to a user."""


class DataError(TinyadError):
    """Input data is missing, empty or malformed (names the file, row and column)."""


class RecipeError(TinyadError):
    """A build recipe is missing, unreadable or inconsistent."""


class BundleError(TinyadError):
    """A device bundle is missing, incomplete, or does not match its manifest."""


class QuantizationError(TinyadError):
    """An int8 model failed a check: float ops left in it, or accuracy lost past the gate."""


class SelfTestError(BundleError):
    """The interpreter on this machine did not reproduce the bundle's golden vectors."""


class InterpreterUnavailable(TinyadError):
    """No TFLite interpreter could be imported."""


class LinkError(TinyadError):
    """The serial link failed: no port, no answer, a refusing device, or retries exhausted."""


class OutputError(TinyadError):
    """A verdict output failed: a JSON-lines file not writable, an MQTT broker unreachable or
    not acknowledging what was published."""
