"""Files that describe the package to ROS tooling: the shipped URDF and the rosdep keys."""
from pathlib import Path

from sim_robot import panda

REPO = Path(__file__).resolve().parent.parent


def test_shipped_urdf_matches_generated():
    shipped = (REPO / "config" / "panda.urdf").read_text()
    assert shipped == panda.urdf(), \
        "regenerate with: python -c 'from sim_robot import panda; print(panda.urdf(), end=\"\")' " \
        "> config/panda.urdf"


def test_package_xml_keys_resolve():
    """Every non-ROS dependency key of package.xml is a rosdep key we define or a standard one."""
    import xml.etree.ElementTree as ET

    import yaml

    ours = set(yaml.safe_load((REPO / "rosdep.yaml").read_text()))
    standard = {"python3-numpy", "python3-scipy", "python3-yaml", "python3-matplotlib",
                "python3-pytest"}
    deps = {e.text for e in ET.parse(REPO / "package.xml").getroot()
            if e.tag.endswith("depend")}
    python_keys = {d for d in deps if d.startswith("python3-")}
    assert python_keys - standard <= ours, python_keys - standard - ours
