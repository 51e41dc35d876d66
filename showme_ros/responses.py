"""Service responses that survive a client the middleware has not finished discovering.

A client sees a service as available once its request reaches the server, but the server may
not yet have matched the client's response reader. Fast DDS then waits briefly, gives up, and
rclpy turns the failure into a ``RuntimeWarning`` ("failed to send response (timeout)") while
the response is dropped: the caller waits forever. This happens to a fresh client right after
start-up, more often on a loaded machine. :func:`deliver_patiently` makes a service resend such
a response until discovery completes or its patience runs out.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from rclpy.service import Service

# The text rclpy gives the warning when the middleware could not deliver a response yet.
UNDELIVERED_WARNING = "failed to send response (timeout)"
# How long a response is retried before it is reported as lost.
DEFAULT_PATIENCE_S = 10.0
RETRY_INTERVAL_S = 0.05

_UNDELIVERED_PATTERN = re.escape(UNDELIVERED_WARNING)
_this_thread = threading.local()
_hook_lock = threading.Lock()
_shown_before: Callable[[Any], None] | None = None


def _route_warning(message: Any) -> None:
    """Take the undelivered-response warning of a patient send; pass every other one on."""
    if (
        getattr(_this_thread, "sending", False)
        and issubclass(message.category, RuntimeWarning)
        and str(message.message).startswith(UNDELIVERED_WARNING)
    ):
        _this_thread.undelivered = True
        return
    if _shown_before is not None:
        _shown_before(message)


def _filter_matches(pattern: re.Pattern[str] | str | None, text: str) -> bool:
    """Match like the warnings module: no pattern, an exact string, or a compiled expression."""
    if pattern is None:
        return True
    if isinstance(pattern, str):
        return pattern == text
    return pattern.match(text) is not None


def _first_matching_filter_action() -> str | None:
    """Return the action of the first warnings filter that applies to the undelivered warning."""
    for action, text, category, module, _lineno in warnings.filters:
        if (
            _filter_matches(text, UNDELIVERED_WARNING)
            and _filter_matches(module, "rclpy.service")
            and issubclass(RuntimeWarning, category)
        ):
            return action
    return None


def _ensure_warning_hook() -> None:
    """Route warnings through :func:`_route_warning` and never deduplicate the undelivered one.

    ``warnings._showwarnmsg`` is hooked because ``warnings.catch_warnings`` leaves it alone, and
    the filter is checked on every send because ``catch_warnings`` restores the filter list.
    """
    global _shown_before
    with _hook_lock:
        if warnings._showwarnmsg is not _route_warning:
            _shown_before = warnings._showwarnmsg
            warnings._showwarnmsg = _route_warning
        if _first_matching_filter_action() != "always":
            warnings.filterwarnings("always", _UNDELIVERED_PATTERN, RuntimeWarning)


def send_until_delivered(send: Callable[[], None], patience_s: float = DEFAULT_PATIENCE_S) -> int:
    """Call ``send`` until the middleware stops reporting the response as undelivered.

    Returns the number of retries; raises ``TimeoutError`` when ``patience_s`` runs out.
    """
    deadline = time.monotonic() + patience_s
    retries = 0
    while True:
        _ensure_warning_hook()
        _this_thread.sending, _this_thread.undelivered = True, False
        try:
            send()
        finally:
            _this_thread.sending = False
        if not _this_thread.undelivered:
            return retries
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"the response could not be delivered within {patience_s:g} s: the client was "
                "never fully discovered"
            )
        retries += 1
        time.sleep(RETRY_INTERVAL_S)


def deliver_patiently(
    service: Service,
    on_retried: Callable[[int], None] | None = None,
    patience_s: float = DEFAULT_PATIENCE_S,
) -> Service:
    """Make ``service`` (an ``rclpy`` service) resend responses its client cannot receive yet.

    ``on_retried(retries)`` is told about every response that needed retries. A response still
    undelivered after ``patience_s`` raises ``TimeoutError`` from the executor's callback, where
    the node's executor reports it. Returns ``service``.
    """
    send_once = service.send_response

    def send_response(response: Any, header: Any) -> None:
        retries = send_until_delivered(lambda: send_once(response, header), patience_s)
        if retries and on_retried is not None:
            on_retried(retries)

    service.send_response = send_response
    return service
