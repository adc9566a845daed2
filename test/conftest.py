"""Shared test set-up: an isolated DDS domain on loopback, headless MuJoCo rendering."""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))

os.environ.setdefault("MUJOCO_GL", "egl")
# Keep DDS discovery on this machine and away from other test runs.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Domains 0-101 keep Fast DDS ports below Linux's ephemeral range; tests use up to +2.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 80))
