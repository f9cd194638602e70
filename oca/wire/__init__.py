"""The wire model: what OCA's separately deployed programs send each other over HTTP, as typed values with one
JSON codec each. The control plane (`control/`), the box (`oca serve`) and the fill job (`fill/`, on a box)
import these models and nothing of each other's code (pyproject.toml's import-linter contracts check it).

Modules, one exchange each: `codec` (WireError and the field readers every decoder uses), `window` (the daily
fill window), `fill` (a box's fill plan, `GET /v1/fill-plans/<box>`), `prefetch` (a box's prefetch jobs,
`POST /prefetch` and `GET /prefetch/<id>`), `inventory` (a box's `GET /inventory` and `/inventory/titles`),
`invalidation` (the control plane's invalidation log, pushed to and pulled by boxes), `control_client` and
`admin_client` (the blocking clients of the control plane's and a box's admin API).

Rules kept here:
- Each model is a frozen dataclass with `to_json()` (JSON-ready values) and `from_json(raw)`, and
  `from_json(m.to_json()) == m` (tests/wire checks it for every model).
- Decoding never trusts the sender: a wrong type, a missing field or an out-of-range number is a WireError
  naming the model, the field and the value. WireError is a BadRequest (400), so a server decoding a request
  answers 400, never 500; a client decoding an answer turns it into its own error (a ValueError too).
- Nothing here imports the control plane, the fill job or the box's server code.
"""
