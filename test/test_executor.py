"""ros_io.lifecycle.HandOffExecutor: each ready callback is handed to a worker once, also
while another worker is busy with a long callback (rclpy's MultiThreadedExecutor offers a
queued callback again and again, spinning on the GIL: ros2/rclpy#1452)."""
import threading
import time

import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from std_msgs.msg import Int32

from ros_io.lifecycle import HandOffExecutor
from support.graph import ros_context


class Counting(HandOffExecutor):
    offered = 0

    def wait_for_ready_callbacks(self, *args, **kwargs):
        result = super().wait_for_ready_callbacks(*args, **kwargs)
        self.offered += 1
        return result


def test_each_callback_is_offered_once_while_a_worker_is_busy():
    with ros_context():
        node = rclpy.create_node("handoff_probe")
        group = ReentrantCallbackGroup()
        received, long_done = [], threading.Event()

        def long_callback():
            timer.cancel()
            time.sleep(1.5)           # a worker busy for a while, like a running goal
            long_done.set()
        timer = node.create_timer(0.01, long_callback, callback_group=group)
        node.create_subscription(Int32, "numbers", lambda m: received.append(m.data), 100,
                                 callback_group=group)
        pub = node.create_publisher(Int32, "numbers", 100)
        executor = Counting(num_threads=2)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            time.sleep(0.1)
            for i in range(100):
                pub.publish(Int32(data=i))
                time.sleep(0.01)
            assert long_done.wait(5.0)
            deadline = time.monotonic() + 5.0
            while len(received) < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert received == list(range(100))
            # the messages, the timer once, a few wake-ups: not one offer per spin
            assert executor.offered <= 110, executor.offered
        finally:
            executor.shutdown()
            node.destroy_node()


def test_shutdown_waits_for_running_callbacks():
    # rclpy's own returns at once; the node destroyed next would fail the callback's reply.
    with ros_context():
        node = rclpy.create_node("shutdown_probe")
        started, finished = threading.Event(), threading.Event()

        def slow_callback():
            timer.cancel()
            started.set()
            time.sleep(1.0)
            finished.set()
        timer = node.create_timer(0.01, slow_callback, callback_group=ReentrantCallbackGroup())
        executor = HandOffExecutor(num_threads=2)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            assert started.wait(5.0)
            assert executor.shutdown(timeout_sec=0.2) is False    # still running: says so
            assert not finished.is_set()
            assert executor.shutdown(timeout_sec=5.0) is True
            assert finished.is_set()
            spinner.join(timeout=5.0)
            assert not spinner.is_alive()
        finally:
            node.destroy_node()
