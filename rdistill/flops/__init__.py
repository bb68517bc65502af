"""FLOP counting: the ledger (exact, executed, paper, 6ND), its audit, and device peaks for MFU."""
