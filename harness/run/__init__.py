"""The suite lifecycle: plan the cells of one ``harness run``, hand them to an executor, collect,
check claims, close every run. Signals and the executor seam live here too."""
