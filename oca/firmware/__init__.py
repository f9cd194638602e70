"""Firmware: signed release bundles (build, pure verification) and switching a box to a new release.

Modules: `bundle` (the file format: a tar of manifest.json, manifest.sig and the release's wheel),
`keys` (Ed25519 signing and trusted keys), `verify` (pure checks: signature, digest, version ordering,
anti-rollback), `build` (wheel + manifest + signature), `releases` (release slots on a box),
`health` (the gate a new generation of workers must pass), `box` (the box's installer state machine).
"""
