"""Where a cell's collapse diagnosis is stored: named here, without torch, because
``harness diagnose`` only reads it (:mod:`harness.cell.diagnosis` measures and writes it)."""

#: the artifact holding a run's diagnosis
ARTIFACT = "diagnosis.json"
