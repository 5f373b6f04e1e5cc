"""The pytest plugin shipped with vq-harness (entry point ``pytest11``)."""
