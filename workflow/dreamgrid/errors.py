"""Exception types. Every error a user can cause names the file or key and the fix."""


class DreamgridError(Exception):
    """Base class for errors dreamgrid raises on purpose."""


class SpecError(DreamgridError, ValueError):
    """A config value, spec or input file is wrong; the message says which and how to fix it."""


class NoFaceError(DreamgridError):
    """An image that must show a face (a reference photo) shows none."""
