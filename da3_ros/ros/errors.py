"""The one error type of the message conversions."""


class ConversionError(ValueError):
    """A message or array cannot be converted; the message names the problem."""
