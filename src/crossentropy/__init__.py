"""crossentropy: the cross-entropy loss family, exact and fast, on any array backend."""

__version__ = "0.1.0"
