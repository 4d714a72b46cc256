"""ament_python setup for da3_ros (colcon build, or `pip install -e .` in the venv)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "da3_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        (f"share/{PACKAGE}/docs", ["README.md", "docs/node.md"]),
        # the bundled demo model (official checkpoint layout) and the sample bags
        *[(f"share/{PACKAGE}/{d}", glob(f"{d}/*")) for d in sorted(glob("data/models/*"))],
        *[(f"share/{PACKAGE}/{d}", glob(f"{d}/*")) for d in sorted(glob("data/*"))
          if glob(f"{d}/*.mcap") or glob(f"{d}/*.db3")],
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="da3_ros maintainers",
    maintainer_email="da3-ros@example.com",
    description="Depth Anything 3 multi-view depth, poses and point clouds for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "da3_node = da3_ros.ros.entry:da3_node",
            "da3-synth = da3_ros.tools.synth:main",
            "da3-eval = da3_ros.tools.eval:main",
            "da3-replay = da3_ros.tools.replay.cli:main",
            "da3-bench = da3_ros.tools.bench_checkout:main",
            "da3-ctl = da3_ros.tools.ctl:main",
        ],
    },
)
