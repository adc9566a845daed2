"""What our lifecycle nodes share: an `_active` flag, teardown on cleanup and shutdown, and a
main that configures and activates at start-up unless `autostart` is false."""
from __future__ import annotations

import rclpy
import rclpy.executors
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn


class ManagedNode(LifecycleNode):
    """Subclasses implement on_configure and `_teardown` (release what configure made)."""

    _active = False

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


def run(node_class, args=None, threads: int = 1) -> None:
    """Spin one ManagedNode (autostarted if its `autostart` parameter says so) until Ctrl-C."""
    rclpy.init(args=args)
    node = node_class()
    if node.get_parameter("autostart").value \
            and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()  # a failed configure was logged; stay unconfigured, serving
    executor = rclpy.executors.MultiThreadedExecutor(num_threads=threads) if threads > 1 \
        else rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node._teardown()
        node.destroy_node()
        rclpy.try_shutdown()
