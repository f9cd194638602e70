"""`python -m loadtest.faults`: the fault suite (see runner.py)."""
