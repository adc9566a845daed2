"""Bring up the simulated Panda: physics, camera and controllers (sim_robot), the robot's TF
tree (robot_state_publisher), and optionally a recorder.

    ros2 launch world_model_planning sim_robot.launch.py scenario:=<yaml> perturb:=true seed:=3
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    share = get_package_share_directory("world_model_planning")
    use_sim_time = LaunchConfiguration("use_sim_time")
    args = [
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="Nodes other than the simulator follow /clock"),
        DeclareLaunchArgument("scenario",
                              default_value=os.path.join(share, "config", "scenarios",
                                                         "default.yaml"),
                              description="Scenario YAML (objects and perturbations)"),
        DeclareLaunchArgument("perturb", default_value="false",
                              description="Apply the scenario's perturbations"),
        DeclareLaunchArgument("seed", default_value="0", description="Perturbation seed"),
        DeclareLaunchArgument("real_time_factor", default_value="1.0",
                              description="Sim seconds per wall second (0 = unthrottled)"),
        DeclareLaunchArgument("record", default_value="false",
                              description="Record the topics of config/recorder.yaml"),
        DeclareLaunchArgument("bag", default_value="",
                              description="Bag directory ('' = bags/rosbag2_<date-time>)"),
    ]
    sim = Node(
        package="world_model_planning", executable="sim_robot", name="sim_robot",
        output="screen",
        parameters=[
            os.path.join(share, "config", "sim_robot.yaml"),
            {"scenario": LaunchConfiguration("scenario"),
             "perturb": ParameterValue(LaunchConfiguration("perturb"), value_type=bool),
             "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
             "real_time_factor": ParameterValue(LaunchConfiguration("real_time_factor"),
                                                value_type=float)},
        ],
    )
    state_publisher = Node(
        package="robot_state_publisher", executable="robot_state_publisher",
        output="screen",
        parameters=[{"use_sim_time": use_sim_time,
                     "robot_description": ParameterValue(
                         open(os.path.join(share, "config", "panda.urdf")).read(),
                         value_type=str)}],
    )
    recorder = Node(
        package="world_model_planning", executable="recorder", name="recorder",
        output="screen", condition=IfCondition(LaunchConfiguration("record")),
        parameters=[os.path.join(share, "config", "recorder.yaml"),
                    {"use_sim_time": use_sim_time, "output": LaunchConfiguration("bag")}],
    )
    # Camera frame sets exceed Fast DDS's default shared-memory segment; keep a user's own
    # profile file if one is set.
    dds = SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", EnvironmentVariable(
        "FASTRTPS_DEFAULT_PROFILES_FILE",
        default_value=os.path.join(share, "config", "fastdds.xml")))
    return LaunchDescription([dds] + args + [sim, state_publisher, recorder])
