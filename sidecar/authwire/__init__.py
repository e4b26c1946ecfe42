"""authwire: joins API-gateway auth outcomes to the kernel's facts about their TCP connection."""

__version__ = "0.1.0"
