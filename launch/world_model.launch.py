"""Bring up the world model (world_model_node) beside the scene memory.

    ros2 launch world_model_planning world_model.launch.py device:=cuda
    ros2 launch world_model_planning world_model.launch.py checkpoint:=/path/to/ckpt scene:=false

The node predicts with objects from /gsplat_scene/objects and renders predicted images
through /gsplat_scene/render; `scene:=true` (default) also starts the scene memory.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


def generate_launch_description():
    share = get_package_share_directory("world_model_planning")
    use_sim_time = LaunchConfiguration("use_sim_time")
    args = [
        DeclareLaunchArgument("checkpoint",
                              default_value=os.path.join(share, "models", "world_model"),
                              description="World-model checkpoint directory"),
        DeclareLaunchArgument("model", default_value="learned",
                              description="learned, or static (the baseline)"),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="Torch device (cpu, cuda, cuda:N)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Follow /clock (true with the simulated robot)"),
        DeclareLaunchArgument("scene", default_value="true",
                              description="Also start the scene memory"),
    ]
    model = LifecycleNode(
        package="world_model_planning", executable="world_model_node", name="world_model_node",
        namespace="", output="screen", remappings=[("objects", "/gsplat_scene/objects")],
        parameters=[os.path.join(share, "config", "world_model_node.yaml"),
                    {"checkpoint": LaunchConfiguration("checkpoint"),
                     "model": LaunchConfiguration("model"),
                     "device": LaunchConfiguration("device"), "use_sim_time": use_sim_time}],
    )
    scene = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "scene_memory.launch.py")),
        launch_arguments={"use_sim_time": use_sim_time,
                          "device": LaunchConfiguration("device")}.items(),
        condition=IfCondition(LaunchConfiguration("scene")))
    return LaunchDescription(args + [scene, model])
