"""The error every data source raises for data it cannot read."""


class DatasetError(Exception):
    """A dataset that is missing or malformed; the message says the fix."""
