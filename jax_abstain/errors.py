"""The one exception type for bad user input.

A `UserError` carries a single line that names the offending argument and the expected form
(`UserError.from_problems`: one line per problem, for a config check that reports them all).
The CLI entry points print it as ``error: <message>`` and exit with status 2, without a
traceback (``--debug`` shows it). Library callers get an ordinary `ValueError` subclass.
"""


class UserError(ValueError):
  """Bad input from a user: wrong shape, unknown name, malformed radius, missing file, ..."""

  def __init__(self, message: str):
    # One line per problem: whitespace inside a line is folded, line breaks separate problems
    # (a config check reports every bad field at once, docs/design.md, Contracts).
    lines = (" ".join(line.split()) for line in str(message).splitlines())
    super().__init__("\n".join(line for line in lines if line))

  @classmethod
  def from_problems(cls, problems) -> "UserError":
    """One error for several problems (a config check that reports every bad field at once):
    its message is one folded line per problem, in the given order."""
    lines = [" ".join(str(p).split()) for p in problems]
    error = cls(lines[0] if lines else "")
    error.args = ("\n".join(lines),)
    return error


class SoundnessError(AssertionError):
  """An attack or certificate broke its contract (a point outside the eps-ball or [0, 1], a
  radius reported for an abstention): a bug, not bad input, so the CLIs show its traceback."""
