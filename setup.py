"""pip path for the ROS-free core (simulator, training, evaluation, notebooks).

The ROS 2 package (interfaces, nodes, launch files) is built with colcon from CMakeLists.txt;
this file lets `pip install -e .[sim,dev]` use the same Python packages without ROS.
"""
from setuptools import find_packages, setup

setup(
    name="world_model_planning",
    version="0.1.0",
    description="Planning by imagining: Gaussian-splat scene memory, world model, sampling MPC.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[
        "sim_robot", "sim_robot.*", "ros_io", "ros_io.*", "robot_model", "robot_model.*",
        "gsplat_scene", "gsplat_scene.*", "world_model_node", "world_model_node.*",
        "planner_node", "planner_node.*",
    ]),
    install_requires=["numpy>=1.24", "scipy>=1.10", "pyyaml>=6", "torch>=2.2", "safetensors>=0.4"],
    extras_require={
        "sim": ["mujoco>=3.2"],
        "bags": ["rosbags>=0.10"],
        "dev": ["pytest>=8", "pytest-timeout>=2", "matplotlib>=3.7", "imageio>=2.30"],
    },
    entry_points={
        "console_scripts": [
            "wmp-collect = sim_robot.collect:main",
            "wmp-train = world_model_node.train:main",
            "wmp-evaluate = world_model_node.evaluate:main",
        ],
    },
)
