"""Planning by imagining on a robot: scene memory, then the MPC planner (world model in-process).

    ros2 launch world_model_planning planner.launch.py device:=cuda \
        backend:=follow_joint_trajectory \
        controller_action:=/joint_trajectory_controller/follow_joint_trajectory
    ros2 launch world_model_planning planner.launch.py backend:=moveit

Camera topics and the scene memory's parameters come from scene_memory.launch.py; the
planner reads /joint_states, /gsplat_scene/objects and /gsplat_scene/gaussians, listens for
an e-stop (std_msgs/Bool) on `estop_topic`, and serves ~/plan_to_goal and ~/plan.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
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
                              description="Follow /clock"),
        DeclareLaunchArgument("backend", default_value="topic",
                              description="topic, follow_joint_trajectory or moveit"),
        DeclareLaunchArgument("controller_topic",
                              default_value="/joint_trajectory_controller/joint_trajectory",
                              description="JointTrajectory topic of the arm controller"),
        DeclareLaunchArgument(
            "controller_action",
            default_value="/joint_trajectory_controller/follow_joint_trajectory",
            description="FollowJointTrajectory action of the arm controller"),
        DeclareLaunchArgument("gripper_topic", default_value="/gripper_controller/commands",
                              description="Gripper width command topic ('' = none)"),
        DeclareLaunchArgument("joint_states", default_value="/joint_states",
                              description="JointState topic of the arm"),
        DeclareLaunchArgument("estop_topic", default_value="/estop",
                              description="std_msgs/Bool e-stop topic"),
        DeclareLaunchArgument("cameras", default_value="[camera]",
                              description="Namespaces of the RGB-D cameras' topics (YAML list)"),
        DeclareLaunchArgument("segmentation", default_value="masks",
                              description="Scene objects from NS/instances/image_raw (masks) "
                                          "or from depth alone (tabletop)"),
    ]
    scene = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "scene_memory.launch.py")),
        launch_arguments={"use_sim_time": use_sim_time,
                          "device": LaunchConfiguration("device"),
                          "cameras": LaunchConfiguration("cameras"),
                          "segmentation": LaunchConfiguration("segmentation")}.items())
    planner = LifecycleNode(
        package="world_model_planning", executable="planner_node", name="planner_node",
        namespace="", output="screen",
        remappings=[("objects", "/gsplat_scene/objects"),
                    ("scene_cloud", "/gsplat_scene/gaussians"),
                    ("joint_states", LaunchConfiguration("joint_states")),
                    ("estop", LaunchConfiguration("estop_topic"))],
        parameters=[os.path.join(share, "config", "planner_node.yaml"),
                    {"checkpoint": LaunchConfiguration("checkpoint"),
                     "model": LaunchConfiguration("model"),
                     "device": LaunchConfiguration("device"),
                     "backend": LaunchConfiguration("backend"),
                     "controller_topic": LaunchConfiguration("controller_topic"),
                     "controller_action": LaunchConfiguration("controller_action"),
                     "gripper_topic": LaunchConfiguration("gripper_topic"),
                     "use_sim_time": use_sim_time}],
    )
    return LaunchDescription(args + [scene, planner])
