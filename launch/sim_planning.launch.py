"""The simulated Panda with the whole planning stack: sim_robot, scene memory and planner.

    ros2 launch world_model_planning sim_planning.launch.py
    ros2 launch world_model_planning sim_planning.launch.py model:=static rviz:=true

Send goals to /planner_node/plan_to_goal (world_model_planning/action/PlanToGoal); RViz shows
the camera, the scene memory and the sampled futures (config/planner.rviz).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("world_model_planning")
    args = [
        DeclareLaunchArgument("model", default_value="learned",
                              description="learned, or static (the baseline)"),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="Torch device (cpu, cuda, cuda:N)"),
        DeclareLaunchArgument("real_time_factor", default_value="1.0",
                              description="Sim seconds per wall second"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz"),
    ]
    sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "sim_robot.launch.py")),
        launch_arguments={"use_sim_time": "true",
                          "real_time_factor": LaunchConfiguration("real_time_factor")}.items())
    planning = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "planner.launch.py")),
        launch_arguments={"use_sim_time": "true", "model": LaunchConfiguration("model"),
                          "device": LaunchConfiguration("device"),
                          "cameras": "[camera, side_camera]"}.items())
    rviz = Node(package="rviz2", executable="rviz2", output="screen",
                arguments=["-d", os.path.join(share, "config", "planner.rviz")],
                parameters=[{"use_sim_time": True}],
                condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription(args + [sim, planning, rviz])
