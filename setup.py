"""The compiled core of the identifier scan (policy/_scanner.c); everything else is pyproject.toml.

`pip install -e .` (hence `make venv`) builds it with the system C compiler and Python headers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bedside.policy._scanner",
            sources=["policy/_scanner.c"],
            extra_compile_args=["-O3", "-Wall"],
        )
    ]
)
