"""Publish a known number of camera-like messages at a fixed rate, then exit (recorder tests).

usage: python -m support.camera_publisher COUNT RATE_HZ WIDTH HEIGHT
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_io.images import numpy_to_image
from world_model_planning.msg import ObjectArray, ObjectState


def main():
    count, rate, width, height = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4])
    rclpy.init()
    node = rclpy.create_node("camera_publisher")
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub_desc = node.create_publisher(String, "/robot_description", latched)
    pub_rgb = node.create_publisher(Image, "/camera/color/image_raw", qos_profile_sensor_data)
    pub_obj = node.create_publisher(ObjectArray, "/ground_truth/objects", 10)
    pub_desc.publish(String(data="<robot name='r'/>"))
    print("ready", flush=True)
    # Wait for the recorder to subscribe to every topic before the first frame.
    while min(pub_rgb.get_subscription_count(), pub_obj.get_subscription_count()) == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    start = time.monotonic()
    for i in range(count):
        stamp = node.get_clock().now().to_msg()
        pub_rgb.publish(numpy_to_image(rgb, "rgb8", stamp, "camera"))
        pub_obj.publish(ObjectArray(objects=[ObjectState(id=i, name="cube")]))
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    print(f"done {count}", flush=True)
    time.sleep(1.0)
    rclpy.shutdown()


if __name__ == "__main__":
    main()
