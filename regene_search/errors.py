"""Errors a user can cause. The CLI turns each into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a name, a file, a value. The message is the whole story."""


class DataError(UserError):
    """A dataset is unknown, missing, or its files are corrupt."""


class SpaceError(UserError):
    """A search-space TOML file is malformed."""


class RunDirError(UserError):
    """A folder is not a run folder, or its files are unreadable."""


class DiskFull(UserError):
    """The results disk is (nearly) full; the run stopped where `--resume` continues it."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM ended the run; its folder continues with `--resume`. Exit code 128 + signal."""

    def __init__(self, signum: int, stage: str, run_dir: str) -> None:
        super().__init__(signum, stage, run_dir)
        self.signum, self.stage, self.run_dir = signum, stage, run_dir
