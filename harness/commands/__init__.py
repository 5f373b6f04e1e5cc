"""The ``harness`` command line: parsing and thin command functions, and the commands' own work
(bench, doctor, scaffold, server) that no run needs."""
