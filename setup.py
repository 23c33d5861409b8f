"""What pyproject.toml cannot say: the workshop's exercise files live in lessons/exercises/, where a learner with
the repository finds them beside the lessons, and ship inside the wheel as the package `minitx.exercises`, where
`minitx exercises DIR` copies them from. One copy on disk, no symlink (they break on Windows)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["minitx", "minitx.*"]) + ["minitx.exercises"],
      package_dir={"minitx.exercises": "lessons/exercises"})
