"""The robot from its URDF (ROS-free): batched forward kinematics of a chain, and the links'
collision shapes as spheres. Shared by the scene memory (its self-filter), the world model
(the end effector) and the planner (limits, collision)."""
