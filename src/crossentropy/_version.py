"""The package's version, written here and nowhere else.

``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``) for the
distribution's metadata; ``crossentropy.__version__`` and
``crossentropy --version`` import it.
"""

__version__ = "0.1.0"
