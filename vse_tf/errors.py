"""The errors a user can fix, apart from every other module.

Library modules raise these; the programs of `vse_tf.cli` turn them into
one paragraph on stderr and exit status 2, never a traceback. This module
imports nothing of the project, so any module may raise them.

A user error is a ValueError too: code that validated with ValueError
before, and callers that catch it, keep working.
"""

import difflib
import numbers


class UserError(ValueError):
    """A mistake the user can fix (a binding, a path, a flag); its message
    names the parameter, the value and what is allowed.

    `parameters` names the gin parameters at fault ("make_optimizer.
    clipnorm"), so that a program can say which config file set each.
    """

    def __init__(self, message, parameters=()):
        super().__init__(message)
        self.parameters = tuple(parameters)


class DatasetError(UserError):
    """A dataset that is missing or malformed; the message says the fix."""


class WeightsError(UserError):
    """Pretrained weights that are missing or cannot be read; the message
    names the file and where the weights come from."""


def check_number(
    parameter,
    value,
    *,
    minimum=None,
    maximum=None,
    integer=False,
    above=False,
    none=False,
):
    """`value`, or a UserError naming `parameter` unless it is a number
    (an integer with `integer`) of at least `minimum` (more than it with
    `above`) and at most `maximum`; None passes when `none`."""
    if value is None and none:
        return value
    kind = numbers.Integral if integer else numbers.Real
    allowed = isinstance(value, kind) and not isinstance(value, bool)
    if allowed and minimum is not None:
        allowed = value > minimum if above else value >= minimum
    if allowed and maximum is not None:
        allowed = value <= maximum
    if not allowed:
        rule = "an integer" if integer else "a number"
        if minimum is not None:
            rule += f" {'>' if above else '>='} {minimum:g}"
        if maximum is not None:
            rule += f"{' and' if minimum is not None else ''} <= {maximum:g}"
        raise UserError(
            f"{parameter} = {value!r} is not allowed: it must "
            f"be {rule}{' or None' if none else ''}."
        )
    return value


def check_choice(parameter, value, choices):
    """`value`, or a UserError naming `parameter`, the choices, and the
    closest of them."""
    if value in choices:
        return value
    close = difflib.get_close_matches(
        str(value), [str(c) for c in choices], n=1
    )
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(
        f"{parameter} = {value!r} is not one of "
        f"{', '.join(repr(c) for c in choices)}.{hint}"
    )
