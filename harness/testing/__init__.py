"""Testing helpers for plugin authors: the conformance kit and the pytest plugin."""
