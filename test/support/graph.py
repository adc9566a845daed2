"""Helpers for tests on a real DDS graph: child processes and spinning until a condition."""
import os
import subprocess
import threading
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ros_io.services import call_repeatable
from sim_robot.collect import stop_process

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def ros_process(args, ready_line=None, timeout=60.0, env=None):
    """Run `python -m`-style args in a child process; yields the Popen.

    If ready_line is given, waits until the child prints a line containing it. The child is
    interrupted (SIGINT, then SIGKILL) on exit; its output is kept in proc.output_lines.
    """
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "test"), str(REPO)] + [p for p in [full_env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=full_env, cwd=REPO)
    proc.output_lines = []

    def pump():  # keep reading so the child never blocks on a full pipe
        for line in proc.stdout:
            proc.output_lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if ready_line is not None and not wait_for_output(proc, ready_line, timeout):
            raise TimeoutError(f"{args} did not print '{ready_line}' in {timeout} s:\n"
                               + output_of(proc))
        yield proc
    finally:
        stop_process(proc)
        reader.join(timeout=5)


@contextmanager
def ros_context(domain=None):
    """rclpy initialised for the block (on DDS domain `domain` if given) and shut down after
    it, even when the block fails, so one failing test cannot break the next one's init."""
    import rclpy

    old = os.environ.get("ROS_DOMAIN_ID")
    if domain is not None:
        os.environ["ROS_DOMAIN_ID"] = str(domain)
    try:
        rclpy.init()
        yield
    finally:
        rclpy.try_shutdown()
        if old is not None:
            os.environ["ROS_DOMAIN_ID"] = old


def spare_domain(offset: int) -> str:
    """A DDS domain beside this run's own, for a node that must not see the shared graph."""
    return str(int(os.environ["ROS_DOMAIN_ID"]) + offset)


def output_of(proc) -> str:
    return "".join(proc.output_lines)


def wait_for_output(proc, text: str, timeout: float, node=None) -> list:
    """Wait until the child has printed a line containing text (spinning node meanwhile);
    returns the matching lines (empty on timeout or exit)."""
    import rclpy

    deadline = time.monotonic() + timeout
    while True:
        found = [ln for ln in list(proc.output_lines) if text in ln]
        if found or time.monotonic() > deadline or proc.poll() is not None:
            return found
        if node is not None:
            rclpy.spin_once(node, timeout_sec=0.05)
        else:
            time.sleep(0.05)


def spin_until(executor_or_node, condition, timeout: float, step: float = 0.05) -> bool:
    """Spin until condition() is true or timeout seconds pass; returns condition()."""
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if hasattr(executor_or_node, "spin_once") and not hasattr(executor_or_node, "get_name"):
            executor_or_node.spin_once(timeout_sec=step)
        else:
            rclpy.spin_once(executor_or_node, timeout_sec=step)
    return bool(condition())


def ask(node, client, request, timeout: float, attempts: int = 2):
    """A service's response, or None when none came within timeout seconds, `attempts` times
    (`ros_io.services.call_repeatable`: a reply to a new client can be lost)."""
    assert client.wait_for_service(timeout_sec=20.0), client.srv_name
    return call_repeatable(client, request, lambda done, t: spin_until(node, done, t),
                           timeout, attempts)


class Lifecycle:
    """Drives a lifecycle node's transitions over its change_state / get_state services.

    get_state is asked again when unanswered (see `ask`); a transition is asked once (asking
    again could make a second one), and one without an answer is judged by the state it
    should have led to.
    """

    def __init__(self, node, target: str):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.node = node
        self.change = node.create_client(ChangeState, f"{target}/change_state")
        self.get = node.create_client(GetState, f"{target}/get_state")

    def transition(self, transition_id: int, timeout: float = 30.0) -> bool:
        from lifecycle_msgs.msg import State, Transition
        from lifecycle_msgs.srv import ChangeState

        leads_to = {Transition.TRANSITION_CONFIGURE: State.PRIMARY_STATE_INACTIVE,
                    Transition.TRANSITION_ACTIVATE: State.PRIMARY_STATE_ACTIVE,
                    Transition.TRANSITION_DEACTIVATE: State.PRIMARY_STATE_INACTIVE,
                    Transition.TRANSITION_CLEANUP: State.PRIMARY_STATE_UNCONFIGURED}
        request = ChangeState.Request(transition=Transition(id=transition_id))
        response = ask(self.node, self.change, request, timeout, attempts=1)
        if response is not None:
            return response.success
        assert transition_id in leads_to, f"transition {transition_id}: no answer"
        return self.state() == leads_to[transition_id]

    def state(self) -> int:
        from lifecycle_msgs.srv import GetState

        response = ask(self.node, self.get, GetState.Request(), 5.0, attempts=3)
        assert response is not None, f"{self.get.srv_name}: no answer"
        return response.current_state.id
