"""rdistill: train students to an exact FLOP budget on IFT and reasoning data, and compare them."""

__version__ = "0.1.0"
