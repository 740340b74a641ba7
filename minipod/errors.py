"""Error types. The CLI maps them to exit codes in exactly one place (cli.main)."""


class MinipodError(Exception):
    """An error the user can act on: printed as one line, no traceback."""

    exit_code = 1


class SpecError(MinipodError):
    """The manifest is invalid. `problems` holds one line per problem (path: message)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            msg = f"{source}: {problems[0]}"
        else:
            msg = f"{source}: {len(problems)} problems\n" + "\n".join("  " + p for p in problems)
        super().__init__(msg)


class NotFound(MinipodError):
    """A pod, container or image that does not exist."""


class Conflict(MinipodError):
    """The thing exists already, or is in a state that forbids the request."""


class SetupError(MinipodError):
    """A kernel or host step failed while building a pod (already rolled back)."""


class UsageError(MinipodError):
    exit_code = 2
