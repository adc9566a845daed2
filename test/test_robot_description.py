"""config/panda.urdf (used by robot_state_publisher on a robot) is the simulator's own URDF."""
from pathlib import Path

from sim_robot import panda

REPO = Path(__file__).resolve().parent.parent


def test_shipped_urdf_matches_generated():
    shipped = (REPO / "config" / "panda.urdf").read_text()
    assert shipped == panda.urdf(), \
        "regenerate with: python -c 'from sim_robot import panda; print(panda.urdf(), end=\"\")' " \
        "> config/panda.urdf"
