"""passby cloud bridge: ingests presence events, decides offers, sends SMS."""

__version__ = "0.1.0"
