"""Nothing lost: cell checkpoints, ``--resume`` decisions, ``harness runs repair`` and the store checks
that come before a store is trusted."""
