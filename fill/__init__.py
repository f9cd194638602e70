"""The nightly fill job: plan and runner (see the fill issue)."""
