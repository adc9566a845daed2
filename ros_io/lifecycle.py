"""What our lifecycle nodes share: an `_active` flag, teardown on cleanup and shutdown, and a
main that configures and activates at start-up unless `autostart` is false."""
from __future__ import annotations

import signal
import threading
import time

import rclpy
import rclpy.executors
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from ros_io.params import CONFIGURE


class ManagedNode(LifecycleNode):
    """Subclasses implement on_configure and `_teardown` (release what configure made).

    Parameters whose descriptor's additional_constraints is `ros_io.params.CONFIGURE` are
    read by on_configure: they can be set while the node is unconfigured, and a request to
    set one in any other state is refused with the reason."""

    _active = False

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.add_on_set_parameters_callback(self._refuse_configure_parameters)

    @property
    def lifecycle_state(self) -> str:
        """The label of the node's lifecycle state (unconfigured, inactive, active, ...)."""
        return self._state_machine.current_state[1]

    def _refuse_configure_parameters(self, parameters) -> SetParametersResult:
        state = self.lifecycle_state
        if state == "unconfigured":
            return SetParametersResult(successful=True)
        for parameter in parameters:
            if self.has_parameter(parameter.name) and \
                    self.describe_parameter(parameter.name).additional_constraints == CONFIGURE:
                return SetParametersResult(successful=False, reason=(
                    f"'{parameter.name}' is applied on configure and the node is {state}: "
                    "deactivate and clean it up, set it, configure again"))
        return SetParametersResult(successful=True)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        raise NotImplementedError


class HandOffExecutor(rclpy.executors.MultiThreadedExecutor):
    """A MultiThreadedExecutor that waits until a worker has picked a callback up before it
    looks for more work.

    rclpy's own (Humble; Jazzy up to 7.1.x: ros2/rclpy#1452) offers a callback again while it
    waits in the pool's queue, so its spin thread loops without blocking until a worker takes
    it. That loop holds the GIL: a worker planning for seconds then ran up to 100 times
    slower, in bursts. All workers busy means the next callback waits for one (the nodes that
    use this keep a worker free for short callbacks).

    Its `shutdown` waits for the callbacks the workers are running, as rclpy's documents but
    (7.1.x) does not: a node destroyed under a running callback makes that callback fail on
    its first use of the node (a service's reply, a publisher)."""

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (rclpy.executors.ExternalShutdownException, rclpy.executors.ShutdownException,
                rclpy.executors.TimeoutException, rclpy.executors.ConditionReachedException):
            return
        started = threading.Event()

        def call():
            started.set()
            handler()
        self._futures.append(handler)     # before it runs: `shutdown` waits for it
        self._executor.submit(call)
        started.wait()
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()      # raise what a callback raised

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop taking callbacks and wait up to timeout_sec [s] (None: for ever) for the
        running ones to return. Returns whether they all have."""
        super().shutdown(timeout_sec=0)
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        while not all(task.done() for task in list(self._futures)):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


def run(node_class, args=None, threads: int = 1) -> None:
    """Spin one ManagedNode (autostarted if its `autostart` parameter says so) until Ctrl-C or
    SIGTERM, then tear it down and shut down.

    rclpy's own signal handlers shut the context down before control comes back here, and a
    node that holds a robot could then no longer command it to rest; so the signals only
    set a flag that the spin polls (a Python handler runs only between waits) and the
    teardown runs on a live context. The handler raises nothing: an exception raised
    wherever the main thread happens to be, say inside rclpy building a task, leaves rclpy's
    objects half made."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    # SIGTERM as `ros2 launch` escalates: the same as Ctrl-C.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = node_class()
    if node.get_parameter("autostart").value \
            and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()  # a failed configure was logged; stay unconfigured, serving
    executor = HandOffExecutor(num_threads=threads) if threads > 1 \
        else rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while executor.context.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    except rclpy.executors.ExternalShutdownException:
        pass
    finally:
        node._teardown()
        if not executor.shutdown(timeout_sec=SHUTDOWN_WAIT_S):
            node.get_logger().warn(f"callbacks still running after {SHUTDOWN_WAIT_S} s; "
                                   "destroying the node under them")
        node.destroy_node()
        rclpy.try_shutdown()


SIGNAL_POLL_S = 0.1
SHUTDOWN_WAIT_S = 5.0   # for callbacks still running when the node stops
