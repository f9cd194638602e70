"""The lab: a whole CDN on loopback with one command (`oca lab up`) or one `with Lab(LabConfig(...)) as lab:`.

An origin serving sample content (`oca.lab.origin`), the control plane (`oca control serve`, with the /lab
page), boxes in two sites on their own 127.0.0.x addresses (`oca serve`, tokens required), the catalog
ingested and every title pre-positioned on one box per site. Modules: `layout` (settings, sites, configs:
pure), `procs` (child processes that never outlive the lab), `fill` (placement, prefetch, the table),
`api` (the lab API the page's Stop/Start buttons call), `lab` (start and stop, in order), `page/` (the page:
plain HTML and JS, hls.js from npm; the control plane serves it, control/lab_page.py).
"""

from oca.lab.lab import Lab, LabBox
from oca.lab.layout import CLIENT_HEADER, LabConfig
from oca.lab.procs import LabError

__all__ = ["CLIENT_HEADER", "Lab", "LabBox", "LabConfig", "LabError"]
