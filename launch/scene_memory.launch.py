"""Bring up the Gaussian-splat scene memory (gsplat_scene) on a robot's RGB-D camera, with
optional RViz.

    ros2 launch world_model_planning scene_memory.launch.py camera:=/camera device:=cuda
    ros2 launch world_model_planning scene_memory.launch.py sim:=true rviz:=true

The node reads <camera>/color/image_raw, <camera>/depth/image_raw, <camera>/color/camera_info,
<camera>/instances/image_raw (optional) and, without tf, <camera>/pose.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description():
    share = get_package_share_directory("world_model_planning")
    camera = LaunchConfiguration("camera")
    use_sim_time = LaunchConfiguration("use_sim_time")
    args = [
        DeclareLaunchArgument("camera", default_value="camera",
                              description="Namespace of the RGB-D camera topics"),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="Torch device of the memory (cpu, cuda, cuda:N)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Follow /clock (true with the simulated robot)"),
        DeclareLaunchArgument("sim", default_value="false",
                              description="Also start the simulated robot"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Start RViz with config/scene_memory.rviz"),
    ]
    remaps = [(f"camera/{stream}", [camera, f"/{stream}"]) for stream in (
        "color/image_raw", "depth/image_raw", "color/camera_info", "instances/image_raw",
        "pose")]
    scene = LifecycleNode(
        package="world_model_planning", executable="gsplat_scene", name="gsplat_scene",
        namespace="", output="screen", remappings=remaps,
        parameters=[os.path.join(share, "config", "gsplat_scene.yaml"),
                    {"device": LaunchConfiguration("device"), "use_sim_time": use_sim_time}],
    )
    sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "sim_robot.launch.py")),
        launch_arguments={"use_sim_time": use_sim_time}.items(),
        condition=IfCondition(LaunchConfiguration("sim")))
    rviz = Node(
        package="rviz2", executable="rviz2", output="screen",
        arguments=["-d", os.path.join(share, "config", "scene_memory.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription(args + [sim, scene, rviz])
