"""The recorder writes a rosbag2 (MCAP) bag of a live graph without dropping messages."""
import time

import numpy as np
import pytest
import rclpy

from ros_io.bag import read_messages, topic_summary
from ros_io.images import image_to_numpy
from ros_io.recorder import Recorder
from support.graph import output_of, ros_context, ros_process, spin_until, wait_for_output


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_records_every_message_with_types(tmp_path, storage):
    count, bag = 60, tmp_path / "bag"
    with ros_context():
        node = rclpy.create_node("recorder_test")
        recorder = Recorder(node, bag, ["/camera/color/image_raw", "/ground_truth/objects",
                                        "/robot_description", "/never_published"], storage)
        try:
            with ros_process(["-m", "support.camera_publisher", str(count), "30", "320",
                              "240"], ready_line="ready") as proc:
                assert spin_until(node, lambda: proc.poll() is not None, 30.0), output_of(proc)
            spin_until(node, lambda: recorder.counts.get("/ground_truth/objects", 0) >= count,
                       5.0)
        finally:
            counts = recorder.close()
            node.destroy_node()
    assert counts == {"/camera/color/image_raw": count, "/ground_truth/objects": count,
                      "/robot_description": 1}
    summary = topic_summary(bag)
    assert summary == {"/camera/color/image_raw": ("sensor_msgs/msg/Image", count),
                       "/ground_truth/objects": ("world_model_planning/msg/ObjectArray", count),
                       "/robot_description": ("std_msgs/msg/String", 1)}
    images = [m for t, _, _, m in read_messages(bag, ["/camera/color/image_raw"])]
    assert images[0].width == 320 and images[0].encoding == "rgb8"
    expected = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert np.array_equal(image_to_numpy(images[-1]), expected)
    ids = [m.objects[0].id for t, _, _, m in read_messages(bag, ["/ground_truth/objects"])]
    assert ids == list(range(count))


def test_records_what_the_planning_nodes_imagined(tmp_path):
    # config/recorder.yaml's planning topics: imagined futures (MarkerArray), the scene
    # memory's objects and /diagnostics round-trip through the bag for a replay in RViz.
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from visualization_msgs.msg import Marker, MarkerArray

    from ros_io.paths import share_path
    from world_model_planning.msg import ObjectArray, ObjectState

    wanted = yaml.safe_load(share_path("config", "recorder.yaml").read_text())
    wanted = wanted["recorder"]["ros__parameters"]["topics"]
    topics = {"/planner_node/futures": MarkerArray, "/gsplat_scene/objects": ObjectArray,
              "/diagnostics": DiagnosticArray}
    assert set(topics) <= set(wanted)
    bag, count = tmp_path / "bag", 5
    with ros_context():
        node = rclpy.create_node("planning_recorder_test")
        recorder = Recorder(node, bag, wanted)
        pubs = {t: node.create_publisher(cls, t, 10) for t, cls in topics.items()}
        try:
            assert spin_until(node, lambda: all(p.get_subscription_count() for p in
                                                pubs.values()), 10.0)
            for i in range(count):
                pubs["/planner_node/futures"].publish(MarkerArray(markers=[
                    Marker(ns="futures", id=i, type=Marker.LINE_STRIP)]))
                pubs["/gsplat_scene/objects"].publish(ObjectArray(objects=[ObjectState(id=i)]))
                pubs["/diagnostics"].publish(DiagnosticArray(status=[DiagnosticStatus(
                    name="planner_node: planner", message=f"cycle {i}")]))
                spin_until(node, lambda: False, 0.05)
            spin_until(node, lambda: all(recorder.counts.get(t, 0) >= count for t in topics),
                       5.0)
        finally:
            counts = recorder.close()
            node.destroy_node()
    assert counts == {t: count for t in topics}
    markers = [m.markers[0] for _, _, _, m in read_messages(bag, ["/planner_node/futures"])]
    assert [(m.ns, m.id, m.type) for m in markers] == [("futures", i, Marker.LINE_STRIP)
                                                      for i in range(count)]
    health = [m.status[0].message for _, _, _, m in read_messages(bag, ["/diagnostics"])]
    assert health == [f"cycle {i}" for i in range(count)]


def test_corrupt_bag_gives_clear_error(tmp_path):
    bag = tmp_path / "broken"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8, oops")
    with pytest.raises(ValueError, match="cannot read bag"):
        topic_summary(bag)
    with pytest.raises(ValueError, match="cannot read bag"):
        list(read_messages(bag))


def test_recorder_node_process_with_bad_parameters(tmp_path):
    """The recorder node logs unknown parameters and a bad storage, records anyway, and
    closes a complete bag on Ctrl-C."""
    bag = tmp_path / "node_bag"
    args = ["-m", "ros_io.recorder_node", "--ros-args", "-p", f"output:={bag}",
            "-p", "storage:=zip", "-p", "topicz:=[/x]", "-p",
            "topics:=[/camera/color/image_raw, /ground_truth/objects]"]
    with ros_process(args, ready_line="recording into") as recorder:
        with ros_process(["-m", "support.camera_publisher", "20", "20", "64", "48"],
                         ready_line="ready") as pub:
            assert wait_for_output(pub, "done 20", 30.0), output_of(pub)
        time.sleep(0.5)
    log = output_of(recorder)
    assert "unknown storage 'zip'; using mcap" in log
    assert "unknown parameter 'topicz'" in log
    assert "bag closed" in log, log
    counts = {t: n for t, (_, n) in topic_summary(bag).items()}
    assert counts == {"/camera/color/image_raw": 20, "/ground_truth/objects": 20}
