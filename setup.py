"""Install the top-level folders under one import namespace: flows/ -> humantag.flows, and so on.

Everything else about the distribution is in pyproject.toml; this file only derives
the package list, so a new sub-package needs no second declaration.
"""

from setuptools import find_packages, setup

FOLDERS = ("flows", "workers", "indexers")

setup(
    packages=[f"humantag.{package}" for package in find_packages(include=[f"{folder}*" for folder in FOLDERS])],
    package_dir={f"humantag.{folder}": folder for folder in FOLDERS},
)
