"""The errors a user can fix, apart from every other module.

Library modules raise these; the programs of `vse_tf.cli` turn them into
one paragraph on stderr and exit status 2, never a traceback. This module
imports nothing of the project, so any module may raise them.
"""


class UserError(Exception):
    """A mistake the user can fix (a binding, a path, a flag); its message
    says how."""


class DatasetError(UserError):
    """A dataset that is missing or malformed; the message says the fix."""


class WeightsError(UserError):
    """Pretrained weights that are missing or cannot be read; the message
    names the file and where the weights come from."""
