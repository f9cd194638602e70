"""A fault-injecting HTTP origin for the pull-through tests (see origin.py)."""
