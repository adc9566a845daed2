"""Bring up the Gaussian-splat scene memory (gsplat_scene) on a robot's RGB-D cameras, with
optional RViz.

    ros2 launch world_model_planning scene_memory.launch.py cameras:="[camera]" device:=cuda
    ros2 launch world_model_planning scene_memory.launch.py sim:=true rviz:=true

For each namespace NS in `cameras` the node reads NS/color/image_raw, NS/depth/image_raw,
NS/color/camera_info, NS/instances/image_raw (optional) and, without tf, NS/pose. A robot
without an instance segmenter sets segmentation:=tabletop (objects from depth; the robot told
apart by /robot_description and /joint_states).
"""
import os
from typing import List  # launch_ros's value types are typing's

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    share = get_package_share_directory("world_model_planning")
    use_sim_time = LaunchConfiguration("use_sim_time")
    args = [
        DeclareLaunchArgument("cameras", default_value="[camera]",
                              description="Namespaces of the RGB-D cameras' topics (a YAML "
                                          "list; the simulated robot has camera and "
                                          "side_camera)"),
        DeclareLaunchArgument("segmentation", default_value="masks",
                              description="Where objects come from: masks (NS/instances/"
                                          "image_raw) or tabletop (from depth alone)"),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="Torch device of the memory (cpu, cuda, cuda:N)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Follow /clock (true with the simulated robot)"),
        DeclareLaunchArgument("sim", default_value="false",
                              description="Also start the simulated robot"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Start RViz with config/scene_memory.rviz"),
    ]
    scene = LifecycleNode(
        package="world_model_planning", executable="gsplat_scene", name="gsplat_scene",
        namespace="", output="screen",
        parameters=[os.path.join(share, "config", "gsplat_scene.yaml"),
                    {"device": LaunchConfiguration("device"), "use_sim_time": use_sim_time,
                     "segmentation": LaunchConfiguration("segmentation"),
                     "cameras": ParameterValue(LaunchConfiguration("cameras"),
                                               value_type=List[str])}],
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
