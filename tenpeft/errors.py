"""The one error type tenpeft raises for bad input."""


class TenpeftError(ValueError):
    """Bad input to tenpeft: the message says what was wrong and how to fix it.

    Raised before any change to a model, so a failed call leaves the model as it was.
    """
