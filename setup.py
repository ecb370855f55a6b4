"""Packaging beyond pyproject.toml: the experiment configs ship inside the wheel.

configs/ (experiment/<name>.yaml) is installed as the package data directory odenets/configs,
where `odenets run` finds it outside a source checkout.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIGS = ["odenets.configs", *(f"odenets.configs.{p}" for p in find_namespace_packages(where="configs"))]

setup(
    packages=[*find_packages(include=["odenets", "odenets.*"]), *CONFIGS],
    package_dir={"odenets.configs": "configs"},
    package_data={package: ["*.yaml"] for package in CONFIGS},
)
