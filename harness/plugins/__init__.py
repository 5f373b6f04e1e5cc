"""First-party plugins (import name ``harness.plugins``), registered through the same
``harness`` entry-point group as any third-party plugin."""
