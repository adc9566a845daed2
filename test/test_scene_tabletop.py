"""The gsplat_scene node without instance masks (segmentation: tabletop) over a real DDS
graph with the simulated robot: objects found from depth, the arm told apart by
/robot_description and /joint_states. (Its own module: the scene node tests share one graph
and rclpy context for the whole module.)"""
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ros_io.images import image_to_numpy
from support.graph import output_of, ros_context, ros_process, spin_until, wait_for_output
from world_model_planning.msg import SceneInfo


def test_objects_from_depth_alone():
    # No instance masks (a robot without a segmenter): the tabletop segmentation finds the
    # three objects, tells the arm apart by /robot_description and /joint_states; a malformed
    # joint state and robot description published later are refused while mapping goes on.
    sim_args = ["-m", "sim_robot.sim_node", "--ros-args", "-p", "publish_instances:=false",
                "-p", "side_camera:=false"]
    scene_args = ["-m", "gsplat_scene.scene_node", "--ros-args", "-p", "downscale:=2",
                  "-p", "iterations:=2", "-p", "segmentation:=tabletop",
                  "-p", "bounds:=[-0.3, -0.7, -0.05, 1.1, 0.7, 0.8]",
                  "-p", "use_sim_time:=true", "-p", "publish_rate:=4.0"]
    with ros_context(), \
            ros_process(sim_args, ready_line="simulated robot up", timeout=120), \
            ros_process(scene_args, ready_line=": configured on", timeout=120) as scene:
        node = rclpy.create_node("tabletop_probe",
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
        latest = {}
        for topic, cls in [("/gsplat_scene/info", SceneInfo),
                           ("/gsplat_scene/segmentation/image", Image),
                           ("/diagnostics", DiagnosticArray),
                           ("/gsplat_scene/objects/markers", MarkerArray)]:
            node.create_subscription(cls, topic, lambda m, t=topic: latest.__setitem__(t, m),
                                     10)
        truth = {"cube": (0.45, -0.2, 0.025), "can": (0.5, 0.05, 0.06),
                 "mug": (0.55, 0.27, 0.045)}

        def found():
            info = latest.get("/gsplat_scene/info")
            if info is None or len(info.objects) < 3:
                return {}
            where = {o.id: (o.pose.position.x, o.pose.position.y, o.pose.position.z)
                     for o in info.objects}
            return {name: min(where, key=lambda i: np.linalg.norm(np.subtract(where[i], t)))
                    for name, t in truth.items()}
        try:
            assert spin_until(node, lambda: len(set(found().values())) == 3, 120.0), \
                output_of(scene)
            info = latest["/gsplat_scene/info"]
            assert len(info.objects) == 3 and all(o.id >= 100 for o in info.objects)
            for obj in info.objects:
                p = obj.pose.position
                assert min(np.linalg.norm(np.subtract([p.x, p.y, p.z], t))
                           for t in truth.values()) < 0.05, obj
            assert "robot body from robot_description" in output_of(scene)
            # RViz shows each object's id, the one to name in a goal
            assert spin_until(node, lambda: {m.text for m in getattr(
                latest.get("/gsplat_scene/objects/markers"), "markers", []) if m.text} == {
                str(o.id) for o in latest["/gsplat_scene/info"].objects}, 30.0)
            assert spin_until(node, lambda: "/gsplat_scene/segmentation/image" in latest, 30.0)
            labels = image_to_numpy(latest["/gsplat_scene/segmentation/image"])
            assert {1} | {o.id for o in info.objects} <= set(np.unique(labels).tolist())
            assert latest["/gsplat_scene/segmentation/image"].header.frame_id

            def table_height():
                for status in getattr(latest.get("/diagnostics"), "status", []):
                    values = {v.key: v.value for v in status.values}
                    if "table height [m]" in values:
                        return float(values["table height [m]"])
            assert spin_until(node, lambda: table_height() is not None, 30.0)
            assert abs(table_height()) < 0.002   # the simulated table top is z = 0

            joints = node.create_publisher(JointState, "/joint_states", 10)

            def refused() -> bool:   # sent until heard: the first may precede discovery
                joints.publish(JointState(name=["panda_joint1", "panda_joint2"],
                                          position=[0.0]))
                return "dropped joint state" in output_of(scene)
            assert spin_until(node, refused, 30.0, step=0.2), output_of(scene)
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_publisher(String, "/robot_description", latched).publish(
                String(data="<robot><link"))
            assert wait_for_output(scene, "robot_description not usable", 30.0), \
                output_of(scene)
            frames = latest["/gsplat_scene/info"].frames_integrated
            assert spin_until(node, lambda: latest["/gsplat_scene/info"].frames_integrated
                              > frames + 2, 60.0)
            assert scene.poll() is None
        finally:
            node.destroy_node()
