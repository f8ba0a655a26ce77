"""netlang: a declarative, config-driven deep-learning training tool speaking BrainScript."""

__version__ = "0.1.0"
