"""Errors that reach users: each names the offending input and says what to do."""


class FYEInputError(ValueError):
    """Bad user input (file, image, video, template, option). The message is meant to be shown as is."""
