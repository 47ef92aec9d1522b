"""Errors a user can act on; the CLI prints them without a traceback."""


class InstallError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ContainersConfError(InstallError):
    """containers.conf cannot be read, parsed or written as needed."""

    def __init__(self, path, problem):
        super().__init__(
            "%s: %s; fix the file and run the command again" % (path, problem))
        self.path = path


class ConfigError(InstallError):
    """terok's config.yml is unreadable or says something unusable."""

    def __init__(self, path, problem):
        super().__init__("%s: %s" % (path, problem))
        self.path = path


class UnsafePathError(InstallError):
    """A folder another user could write would let them replace our hook."""


class WriteError(InstallError):
    """A file could not be written; the previous state was kept."""
