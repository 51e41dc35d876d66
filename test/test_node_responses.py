"""A response the middleware could not deliver yet is resent, never silently dropped."""

import threading
import time
import warnings
from collections.abc import Callable

import pytest
import rclpy
from rclpy.node import Node
from std_srvs.srv import Trigger

from showme_ros.executor import ResilientExecutor
from showme_ros.responses import UNDELIVERED_WARNING, deliver_patiently, send_until_delivered


def undelivered_times(count: int) -> tuple[list[int], Callable[[], None]]:
    """A send that the middleware reports as undelivered ``count`` times, then delivers."""
    attempts: list[int] = []

    def send() -> None:
        attempts.append(len(attempts))
        if len(attempts) <= count:
            # rclpy raises exactly this warning (from C) when Fast DDS times out.
            warnings.warn(
                f"{UNDELIVERED_WARNING}: client will not receive response",
                RuntimeWarning,
                stacklevel=1,
            )

    return attempts, send


def test_an_undelivered_response_is_resent_until_it_goes_through():
    attempts, send = undelivered_times(3)
    assert send_until_delivered(send, patience_s=5.0) == 3
    assert len(attempts) == 4


def test_a_delivered_response_is_sent_once():
    attempts, send = undelivered_times(0)
    assert send_until_delivered(send) == 0
    assert len(attempts) == 1


def test_a_client_never_discovered_is_reported_after_the_patience():
    attempts, send = undelivered_times(10**6)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"could not be delivered within 0\.3 s"):
        send_until_delivered(send, patience_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert len(attempts) > 1


def test_other_warnings_still_reach_the_caller():
    def send() -> None:
        warnings.warn("something else", RuntimeWarning, stacklevel=1)

    with pytest.warns(RuntimeWarning, match="something else"):
        assert send_until_delivered(send) == 0


def test_the_same_warning_outside_a_patient_send_is_not_swallowed():
    send_until_delivered(lambda: None)  # installs the hook
    with pytest.warns(RuntimeWarning, match="failed to send response"):
        warnings.warn(f"{UNDELIVERED_WARNING}: elsewhere", RuntimeWarning, stacklevel=1)


def test_a_patient_service_answers_a_real_client():
    rclpy.init()
    try:
        server, caller = Node("patient_server"), Node("patient_caller")
        retried: list[int] = []
        service = deliver_patiently(
            server.create_service(
                Trigger, "patient", lambda _req, res: setattr(res, "success", True) or res
            ),
            retried.append,
        )
        executor = ResilientExecutor(2, lambda error: pytest.fail(repr(error)))
        executor.add_node(server)
        executor.add_node(caller)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        client = caller.create_client(Trigger, "patient")
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 20
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done() and future.result().success
        assert retried == []  # client discovered before it called: delivered at once
        assert service.send_response.__qualname__.startswith("deliver_patiently")
        executor.shutdown()
        spinner.join(10)
    finally:
        rclpy.try_shutdown()
