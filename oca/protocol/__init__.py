"""The master-worker protocol: typed, versioned messages (messages), their one codec and the handshake
(codec), the version rule (version), and a release's version read from its slot (releases).
docs/protocol.md describes it.

Nothing here imports oca.fetch or oca.serve: both import this.
"""
