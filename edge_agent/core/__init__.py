"""The edge agent's pure core: frame parsing, presence and footfall. No IO; ``now`` is passed in."""
