"""Simulated Franka-Panda-like robot: kinematics, MuJoCo world, camera, IK and scripted exploration."""

import os

# MuJoCo picks its OpenGL backend when first imported; off-screen EGL works without a display.
os.environ.setdefault("MUJOCO_GL", "egl")
