"""The nightly fill job, run on each box: `plan` (pure: the control plane's plan for this box and the box's
inventory in, commands out) and `runner` (carries the commands out against the local box's admin API).
The command line is `oca fill run|plan` (oca/cli/fill.py); the plan itself is made by the control plane
(control/fill_plan.py) and reaches the job over HTTP as the wire model's PlanReply (oca/wire/fill.py): the
job imports no control-plane code."""
