"""The nightly fill job, run on each box: `plan` (pure: the control plane's plan for this box and the box's
inventory in, commands out) and `runner` (carries the commands out against the local box's admin API).
The command line is `oca fill run|plan` (oca/cli/fill.py); the plan itself is made by control/fill_plan.py."""
