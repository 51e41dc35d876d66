"""Why a request failed: one exception type per ``ErrorCode`` value.

Every failure the node reports to a client is one of these; the node fills the response's
``error_code`` from the type and its ``message`` from the text, and counts failures by type.
"""

from __future__ import annotations

from showme_ros.msg import ErrorCode


class RequestError(ValueError):
    """A request that cannot be served; its message is sent back to the caller."""

    code: int = ErrorCode.INVALID_REQUEST


class BadImageError(RequestError):
    """The image (from the request or the camera topic) cannot be used."""

    code = ErrorCode.BAD_IMAGE


class NoInputError(RequestError):
    """Neither the request nor the input topics provide an image or an instruction."""

    code = ErrorCode.NO_INPUT


class StaleFrameError(RequestError):
    """The latest camera frame is older than ``limits.max_frame_age``."""

    code = ErrorCode.STALE_FRAME


class BusyError(RequestError):
    """The queue is full."""

    code = ErrorCode.BUSY


class NotActiveError(RequestError):
    """No model is loaded."""

    code = ErrorCode.NOT_ACTIVE


class CancelledError(RequestError):
    """The caller cancelled the action goal."""

    code = ErrorCode.CANCELLED


class StoppedError(RequestError):
    """The node was deactivated or shut down while the request waited or ran."""

    code = ErrorCode.STOPPED


class InternalError(RequestError):
    """A fault inside the model; details are in the node's log."""

    code = ErrorCode.INTERNAL
