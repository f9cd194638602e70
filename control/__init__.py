"""The control plane: fleet, health, steering, manifests, catalog (see the control-plane issue)."""
