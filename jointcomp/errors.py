"""The error types jointcomp raises for bad input. The CLI prints their message as one line."""

from __future__ import annotations


class JointcompError(Exception):
    """Base class: an error whose message is meant for the user, printed without a traceback."""

    exit_code = 1


class RecipeError(JointcompError):
    """A recipe is malformed: the message names the key path and what is allowed."""

    exit_code = 2


class FormatError(JointcompError, ValueError):
    """A .jcz file is malformed, corrupted, truncated or untrusted; the message names the
    problem."""

    exit_code = 2


class DataError(JointcompError):
    """A dataset cannot be found or read: the message says where it looked and how to get it."""

    exit_code = 2


class ModelError(JointcompError):
    """A model builder cannot be resolved or a layer type is not supported."""

    exit_code = 2


class OutputExistsError(JointcompError):
    """The output directory exists and neither --resume nor --force was given."""

    exit_code = 2
